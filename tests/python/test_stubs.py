"""The type stubs (_epwa.pyi) name every public class and member of the module, and nothing else."""

import ast
import pathlib

import epwa
from epwa import _epwa


def stub_members():
    tree = ast.parse(pathlib.Path(_epwa.__file__).with_name("_epwa.pyi").read_text())
    classes = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names = set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    names.add(item.name)
                elif isinstance(item, ast.AnnAssign):
                    names.add(item.target.id)
            classes[node.name] = names - {"__init__"}
    return classes


def test_stubs_match_the_module():
    stubs = stub_members()
    public = {n for n in dir(_epwa) if not n.startswith("_")}
    assert set(stubs) == public
    assert set(epwa.__all__) == public
    for name, members in stubs.items():
        cls = getattr(_epwa, name)
        if issubclass(cls, BaseException):
            continue
        actual = {n for n in dir(cls) if not n.startswith("_")}
        assert members == actual, name
