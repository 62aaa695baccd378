"""The documents the code cites exist and say what the code does.

Docstrings, tests and benchmark notes cite the design as ``docs/design.md#<section>``. These tests
resolve every such citation, and every relative link of the Markdown files, against the files and
headings that exist, so a renamed section or a moved file fails here instead of leaving a dangling
reference (the code once cited a design document that was not in the repository).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DESIGN = REPO / "docs" / "design.md"
# Where citations may appear: sources, tests, benchmarks, examples and the top-level documents.
CITING = ("src", "tests", "benchmarks", "examples", "docs")
CITING_SUFFIXES = (".py", ".md", ".sh", ".yaml", ".txt")
# A docs/ path, possibly relative (../docs/...), with an optional #anchor; not part of a longer path or URL.
DOC_REFERENCE = re.compile(r"(?<![\w/.-])(?:\.\./)*(docs/[\w./-]*?\.md)(?:#([\w-]+))?")
MARKDOWN_LINK = re.compile(r"\]\(([^()\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces turned into hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def headings(path: Path) -> list[str]:
    """The ATX headings of a Markdown file, outside fenced code blocks."""
    found, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6} (.+)", line)):
            found.append(match.group(1))
    return found


def anchors(path: Path) -> set[str]:
    return {github_anchor(heading) for heading in headings(path)}


def citing_files() -> list[Path]:
    files = [REPO / "README.md", REPO / "BENCHMARKS.md"]
    for folder in CITING:
        files += [p for p in sorted((REPO / folder).rglob("*")) if p.suffix in CITING_SUFFIXES and p.is_file()]
    return files


def markdown_files() -> list[Path]:
    return [p for p in citing_files() if p.suffix == ".md"]


def test_github_anchor_matches_the_anchors_github_makes():
    # Anchors the README and BENCHMARKS.md already link to, as GitHub renders them.
    assert github_anchor("Process rewards: step labels, step scores, PRMs") == (
        "process-rewards-step-labels-step-scores-prms"
    )
    assert github_anchor("3. Training speed and memory vs TRL's RewardTrainer") == (
        "3-training-speed-and-memory-vs-trls-rewardtrainer"
    )
    assert github_anchor("Bradley-Terry loss") == "bradley-terry-loss"
    assert github_anchor("`icrm` design") == "icrm-design"


def test_headings_skip_comments_in_code_blocks(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n```bash\n# a comment, not a heading\n```\n\n## Real one\n")
    assert headings(page) == ["Title", "Real one"]


def test_every_docs_reference_names_an_existing_file_and_section():
    references = []
    for path in citing_files():
        for match in DOC_REFERENCE.finditer(path.read_text(encoding="utf-8")):
            references.append((path.relative_to(REPO), match.group(1), match.group(2)))
    cited_from = {str(source) for source, _, anchor in references if anchor}
    # The modules whose docstrings cite the design: a regex that stopped matching would pass vacuously.
    assert {"src/icrm/losses.py", "src/icrm/data/formats.py", "tests/base/test_losses.py"} <= cited_from
    broken = []
    for source, target, anchor in references:
        document = REPO / target
        if not document.is_file():
            broken.append(f"{source}: {target} does not exist")
        elif anchor and anchor not in anchors(document):
            broken.append(f"{source}: {target} has no section #{anchor}")
    assert not broken, "\n".join(broken)


def test_nothing_cites_the_design_by_its_old_name_or_section_numbers():
    stale = [
        f"{path.relative_to(REPO)}:{number}"
        for path in citing_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bDESIGN\.md\b|design\.md ?§", line)
    ]
    assert not stale, f"cite docs/design.md#<section> instead: {stale}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_of_markdown_files_resolve(path):
    broken = []
    for target in MARKDOWN_LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        document = (path.parent / file_part).resolve() if file_part else path
        if not document.exists():
            broken.append(f"{target}: no such file")
        elif anchor and document.suffix == ".md" and anchor not in anchors(document):
            broken.append(f"{target}: no such section")
    assert not broken, broken


def section(title: str) -> str:
    """The text of one ``##`` section of docs/design.md, its subsections included."""
    text = DESIGN.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def test_design_names_every_file_a_checkpoint_holds():
    from icrm.modeling import ICRM_CONFIG, ICRM_STATE, LM_HEAD_FILE, WEIGHTS_FILE
    from icrm.outputs import OUTPUT_MARKER

    checkpoint = section("Checkpoint format")
    for name in (WEIGHTS_FILE, ICRM_CONFIG, ICRM_STATE, LM_HEAD_FILE, OUTPUT_MARKER, "config.json"):
        assert f"`{name}`" in checkpoint, name


def test_design_lists_every_kind_of_output_folder():
    """Each command that writes a marked output folder is named where the design lists the folder kinds."""
    call = re.compile(r"\b(?:check_output|staged_directory|run_directory)\(\s*[\w.]+,\s*\"([^\"]+)\"")
    kinds = {kind for path in (REPO / "src").rglob("*.py") for kind in call.findall(path.read_text(encoding="utf-8"))}
    assert {"train", "sft", "demo"} <= kinds
    contract = section("Command-line contract")
    missing = sorted(kind for kind in kinds if f"`{kind}`" not in contract)
    assert not missing, f"docs/design.md#atomic-outputs-and-overwriting does not list {missing}"


# `module.name` in the design, for icrm's modules; file names such as `losses.png` are not code.
CODE_NAME = re.compile(r"`(?:icrm\.)?([a-z]+)\.([A-Za-z_]\w*)(?:\(\))?`")
CLASS_MEMBER = re.compile(r"`(RewardModel|ICRMTrainer|ICRMConfig)\.(\w+)(?:\(\))?`")
FILE_EXTENSIONS = {"json", "jsonl", "yaml", "png", "npy", "safetensors", "md", "py", "txt", "html"}
REPO_PATH = re.compile(r"`((?:src/icrm|tests|benchmarks|examples)/[\w./-]+)`")


def test_names_and_paths_the_design_cites_exist():
    """``data.encode``, ``RewardModel.save_pretrained``, ``src/icrm/losses.py``…: a move or a rename fails here."""
    import importlib
    import inspect
    import pkgutil

    import icrm

    text = DESIGN.read_text(encoding="utf-8")
    modules = {info.name for info in pkgutil.iter_modules(icrm.__path__)}
    missing = []
    checked = 0
    for module, name in CODE_NAME.findall(text):
        if module not in modules or name in FILE_EXTENSIONS:
            continue
        checked += 1
        if not hasattr(importlib.import_module(f"icrm.{module}"), name):
            missing.append(f"{module}.{name}")
    for cls_name, member in CLASS_MEMBER.findall(text):
        cls = getattr(icrm, cls_name)
        checked += 1
        if not (hasattr(cls, member) or re.search(rf"\bself\.{member}\b|\"{member}\"", inspect.getsource(cls))):
            missing.append(f"{cls_name}.{member}")
    missing += [path for path in REPO_PATH.findall(text) if not (REPO / path).exists()]
    assert checked >= 20  # the patterns still find the design's references
    assert not missing, f"docs/design.md names what the code does not have: {missing}"


def test_the_readme_layout_lists_every_module_of_the_tree():
    """The README's layout block names each base module and, per package, exactly the modules it holds."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text[text.index("\nsrc/icrm/\n"):]
    block = block[: block.index("```")]
    src = REPO / "src" / "icrm"
    listed, package = {}, ""
    for line in block.splitlines()[1:]:
        if match := re.match(r"  (\w+)/\s+(.*)", line):  # a package and its modules
            package = match.group(1)
            listed[package] = set(re.findall(r"\b(\w+)\b", match.group(2).split("(")[0]))
        elif match := re.match(r"    (\w+)/\s+(.*)", line):  # a subpackage of the package above
            listed[f"{package}/{match.group(1)}"] = set(re.findall(r"\b(\w+)\b", match.group(2)))
        elif line.startswith("  ") and ".py" in line:
            listed[""] = set(re.findall(r"(\w+)\.py", line))
    base = {p.stem for p in src.glob("*.py") if p.stem != "__init__"}
    assert listed.pop("") == base
    packages = {str(p.parent.relative_to(src)) for p in src.glob("*/**/__init__.py")}
    assert set(listed) == packages
    for package, modules in listed.items():
        present = {p.stem for p in (src / package).glob("*.py") if p.stem not in ("__init__", "__main__")}
        present |= {p.name for p in (src / package).iterdir() if (p / "__init__.py").exists()}
        assert modules == present, package
