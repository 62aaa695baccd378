"""One module per command: read the inputs, run the library, write the outputs, return the summary.

The CLI (``icrm.cli``) is a thin shell over these runners; the library below never imports them.
"""
