"""Every module and class of the app says what it is (a docstring), migrations aside."""

import ast
from pathlib import Path

import scheduling

APP = Path(scheduling.__file__).parent


def test_every_module_and_class_has_a_docstring():
    missing = []
    for path in sorted(APP.rglob("*.py")):
        if "migrations" in path.parts or (path.name == "__init__.py" and not path.read_text()):
            continue
        tree = ast.parse(path.read_text())
        if not ast.get_docstring(tree):
            missing.append(str(path.relative_to(APP)))
        missing += [
            f"{path.relative_to(APP)}:{node.lineno} {node.name}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef)
            and node.name not in {"Meta", "Media"}
            and not ast.get_docstring(node)
        ]
    assert missing == []
