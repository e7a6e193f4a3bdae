"""The layout rules of the package, read from its source with `ast` (nothing is imported or run).

Commands (modules that run as `python -m`, i.e. have an `if __name__ == "__main__":` block) sit on top and
nothing imports them; the library below has no import circle and no import that runs upward between the
role folders; every library module has a test file of its own, or a home named here.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bert_jax"

# role folder -> role folders (and top-level modules) it must never import
FORBIDDEN = {
    "model": ("data", "pretraining", "finetuning", "hf", "runtime", "tools"),
    "data": ("model", "pretraining", "finetuning", "hf", "tools"),
    "runtime": ("model", "pretraining", "finetuning", "hf", "tools"),
    "pretraining": ("finetuning", "hf", "tools"),
    "hf": ("finetuning", "tools"),
    "finetuning": ("tools",),
}

# Library modules whose tests live in a file not named after them.
TEST_HOMES = {
    "cli": "test_bad_inputs.py",  # one-line errors of every command
    "errors": "test_config.py",  # InputError, raised throughout
    "hf.distilbert_names": "test_distill_hf.py",
    "pretraining.teacher": "test_distillation.py",
    "model.pooling": "test_sentence_losses.py",
    "finetuning.buckets": "test_bucketed_embedding.py",
    "finetuning.sentence_encoder": "test_sentence_embedding.py",
    "data.full_sentences": "test_pipeline.py",  # RoBERTa's full-sentence instances
    "data.tfds_text": "test_sharded_corpus.py",
    "data.tokenizer_factory": "test_sentencepiece_tokenizer.py",
    "data.vocab": "test_sentencepiece_tokenizer.py",
    "finetuning.config": "test_runner.py",
    "finetuning.table_files": "test_own_tasks.py",
    "finetuning.tag_schemes": "test_own_tasks.py",
    "finetuning.task_spec": "test_tasks.py",
    "finetuning.model_dir": "test_own_tasks.py",
    "finetuning.st_export": "test_sentence_transformers.py",  # with the hf/ module it writes and reads through
    "finetuning.features": "test_tasks.py",
    "finetuning.steps": "test_runner.py",
    "finetuning.task_data": "test_runner.py",
    "finetuning.task_files": "test_tasks.py",
    "finetuning.transfer": "test_runner.py",
    "hf.electra_names": "test_electra.py",  # with the ELECTRA model it exports
    "hf.files": "test_hf_convert.py",
    "hf.modernbert_names": "test_modernbert_hf.py",  # against transformers' ModernBertForMaskedLM
    "hf.task_names": "test_hf_export.py",  # with the fine-tuned models it names
    "model.pretraining_heads": "test_encoder.py",
    "encoder_flags": "test_modern_block.py",  # the block flags, with the model they shape
    "recipes": "test_config.py",  # the recipes, with the configs they build
    "model.attention": "test_modern_block.py",  # masks and windows against dense references
    "model.task_heads": "test_runner.py",
    "pretraining.losses": "test_steps.py",
    "runtime.numerics": "test_reliability.py",
    "runtime.reporting": "test_loop.py",  # the log line, metrics.jsonl and TensorBoard of a real run
}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in PACKAGE.rglob("*.py")}


def _is_command(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
               and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__" for node in tree.body)


def _type_checking_imports(tree: ast.Module) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            lines |= {sub.lineno for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))}
    return lines


def _imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The bert_jax modules `name` imports (lazy imports inside functions count; TYPE_CHECKING ones do not)."""
    skip = _type_checking_imports(tree)
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in skip:
            continue
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                package = name.split(".")[:-1] if name in known and not name.endswith("__init__") else name.split(".")
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        found |= {c for c in candidates if c in known and c != name and not name.startswith(c + ".")}
    return found - {"bert_jax"}


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, tree, known) for name, tree in modules.items()}, {
        name for name, tree in modules.items() if _is_command(tree)}


def test_no_import_circle(graph):
    edges, _ = graph
    state, stack, circles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_the_library_never_imports_a_command(graph):
    edges, commands = graph
    assert {"bert_jax.pretrain", "bert_jax.finetune", "bert_jax.export", "bert_jax.data.tokenizer"} <= commands
    upward = sorted(f"{a} -> {b}" for a, deps in edges.items() if a not in commands for b in deps if b in commands)
    assert not upward, f"library modules importing a command: {upward}"


def test_commands_sit_on_top():
    """Every command is a top-level module, except the released `python -m bert_jax.data.tokenizer`."""
    commands = {name for name, tree in _modules().items() if _is_command(tree)}
    nested = sorted(c for c in commands if c.count(".") > 1 and c != "bert_jax.data.tokenizer")
    assert not nested, f"commands inside role folders: {nested}"


def test_no_import_runs_upward_between_role_folders(graph):
    edges, commands = graph
    wrong = []
    for module, deps in edges.items():
        parts = module.split(".")
        if module in commands or len(parts) < 3 or parts[1] not in FORBIDDEN:
            continue
        wrong += [f"{module} -> {dep}" for dep in deps if dep.split(".")[1] in FORBIDDEN[parts[1]]]
    assert not wrong, f"imports that run upward: {sorted(wrong)}"


def test_every_library_module_has_a_test_file():
    tests = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    missing = []
    for name, tree in _modules().items():
        short = name.split(".", 1)[1] if "." in name else ""
        if not short or _is_command(tree) or short.endswith("__init__") or name.count(".") == 1 and short == "":
            continue
        if not tree.body or all(isinstance(n, ast.Expr) for n in tree.body):
            continue  # a package's docstring-only __init__
        own = f"test_{short.rsplit('.', 1)[-1]}.py"
        prefixed = f"test_{short.replace('.', '_')}.py"
        home = TEST_HOMES.get(short)
        if own not in tests and prefixed not in tests and home not in tests:
            missing.append(short)
    assert not missing, f"library modules without a test file or a home in TEST_HOMES: {sorted(missing)}"
