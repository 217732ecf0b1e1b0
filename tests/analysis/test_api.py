"""The public API of ``analysis``: importing it is cheap, every exported name exists."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import analysis

HEAVY = ("analysis.longitudinal", "analysis.public", "analysis.frequentist")  # import PyMC / statsmodels


def test_import_is_light():
    code = ("import sys, analysis\n"
            "heavy = [m for m in ('pymc', 'scipy', 'pandas', 'nutpie', 'statsmodels') if m in sys.modules]\n"
            "assert not heavy, heavy\nprint('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_every_export_exists():
    root = Path(analysis.__file__).parent
    for name, module in analysis._EXPORTS.items():
        if module in HEAVY:  # checked without importing: the module (or package) defines or imports the name
            leaf = module.split(".")[1]
            path = root / leaf / "__init__.py" if (root / leaf).is_dir() else root / f"{leaf}.py"
            tree = ast.parse(path.read_text())
            defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
            defined |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
            assert name in defined, f"{module} does not define {name}"
        else:
            assert getattr(analysis, name) is not None


def test_unknown_name_is_an_attribute_error():
    try:
        analysis.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")
