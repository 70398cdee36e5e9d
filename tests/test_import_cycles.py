"""No import cycles anywhere in dutyd, type-only imports included.

`.importlinter`'s no-cycles contract (import-linter's acyclic_siblings) checks the children of
each package against each other; it does not see a package's `__init__` and one of its own
modules importing each other (`dutyd.storage` choosing an implementation that imports
`dutyd.storage` back), a cycle that only a lazy import keeps from failing. This test walks
every import, lazy ones included.
"""

from __future__ import annotations

import grimp


def test_no_module_is_imported_back_by_what_it_imports():
    # No cache: a stale one would hide an import just added.
    graph = grimp.build_graph("dutyd", cache_dir=None)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                cycles.append(" -> ".join((importer, *back)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_check_sees_a_lazy_import():
    # The storage package imports its implementations inside open_storage (one driver per
    # process); the walk must count such an import, or the test above would prove nothing.
    graph = grimp.build_graph("dutyd", cache_dir=None)
    assert "dutyd.storage.postgres" in graph.find_modules_directly_imported_by("dutyd.storage")
