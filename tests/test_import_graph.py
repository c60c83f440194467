"""The package's shape: no import cycle (module- or function-level), the CLI imported only
by the CLI, no two modules with one file name, no module over 400 lines, a thin main."""

import ast
import collections
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("kd_jax", "configs")
CLI = ("kd_jax.main", "kd_jax.cli")


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _resolve(name: str, modules) -> str | None:
    """The project module an imported name refers to (a module, or its package)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """{module: project modules it imports}, from every import statement in the file."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # `from pkg import sub` imports the submodule `pkg.sub` when there is one.
                targets = [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                resolved = _resolve(target, modules)
                if resolved and resolved != name:
                    edges.add(resolved)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = collections.defaultdict(int)  # 0 new, 1 on stack, 2 done
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state[nxt] == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if state[nxt] == 0 and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state[node] == 0 and (cycle := visit(node)):
            return cycle
    return None


def test_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_only_the_cli_imports_the_cli():
    for name, edges in import_graph().items():
        if name.startswith(CLI):
            continue
        cli = sorted(e for e in edges if e.startswith(CLI))
        assert not cli, f"{name} imports {cli}"


def test_every_file_name_once_and_small():
    files = [p for p in (ROOT / "kd_jax").rglob("*.py") if p.name != "__init__.py"]
    names = collections.Counter(p.name for p in files)
    dupes = {n for n, c in names.items() if c > 1 and n != "__main__.py"}
    assert not dupes, f"file names used twice: {sorted(dupes)}"
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in files}
    big = {p: n for p, n in sizes.items() if n > 400}
    assert not big, f"files over 400 lines: {big}"
    assert sizes["kd_jax/main.py"] <= 80
