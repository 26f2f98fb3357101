import sys
import textwrap

import pytest

import medbench
from medbench.core.errors import MedbenchError
from medbench.core.registry import Registry
from medbench.distill.contract import METHODS, CondensedSet, register_method


def test_builtin_methods_are_listed_and_glob():
    assert {"random", "full"} <= set(medbench.list_methods())
    assert medbench.list_methods("r*") == ["random", "random_soft", "random_tiled"]
    assert {"herding", "kcenter", "datm", "idm", "mtt"} <= set(medbench.list_methods())
    assert medbench.list_methods("zz*") == []


def test_unknown_name_lists_available():
    with pytest.raises(MedbenchError, match=r"unknown method 'nope'; available: .*full.*random"):
        medbench.get_method("nope")


def test_duplicate_registration_is_refused():
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 2)


def test_decorator_registers_and_describes():
    reg: Registry = Registry("method")

    @reg.decorator("mine", lambda name, fn: (name, fn.__doc__))
    def mine():
        """One line."""

    assert reg.get("mine") == ("mine", "One line.")
    assert mine.__doc__ == "One line."  # the factory itself is handed back unchanged


def test_entry_point_plugin_registers_a_method(tmp_path, monkeypatch):
    # A real installed distribution on sys.path, discovered by importlib.metadata.
    (tmp_path / "toy_plugin.py").write_text(textwrap.dedent('''
        from medbench.distill.contract import CondensedSet, register_method

        @register_method("toy_plugin_method")
        def toy(task, params):
            """A third-party method loaded from an entry point."""
            return CondensedSet(task.real(task.class_indices[0][:1]), task.train.labels[:1])
    '''))
    dist = tmp_path / "toy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[medbench.methods]\ntoy = toy_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(METHODS, "_entry_points_loaded", False)
    monkeypatch.delitem(sys.modules, "toy_plugin", raising=False)
    try:
        assert "toy_plugin_method" in medbench.list_methods("toy*")
        assert "third-party" in medbench.get_method("toy_plugin_method").description
    finally:
        METHODS._items.pop("toy_plugin_method", None)


def test_broken_plugin_gives_one_line_error(tmp_path, monkeypatch):
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[medbench.methods]\nbroken = does_not_exist_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(METHODS, "_entry_points_loaded", False)
    with pytest.raises(MedbenchError, match="cannot load method plug-in 'broken'"):
        medbench.list_methods()


def test_register_method_in_process():
    @register_method("test_inline_method")
    def inline(task, params):
        """Inline."""
        return CondensedSet(task.real(task.class_indices[0][:1]), task.train.labels[:1])

    try:
        assert medbench.get_method("test_inline_method").run is inline
    finally:
        METHODS._items.pop("test_inline_method")
