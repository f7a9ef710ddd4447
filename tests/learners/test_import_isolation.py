"""learners/ must work on a GPU host without TensorFlow or Reverb, and on current JAX, where rlax
(through distrax and tensorflow_probability) cannot be imported (see learners/value_ops.py)."""

import ast
import os
import pathlib
import subprocess
import sys
import textwrap

import rillet.learners

FORBIDDEN = ("tensorflow", "reverb", "rlax", "distrax", "tensorflow_probability")
LEARNERS_DIR = pathlib.Path(rillet.learners.__file__).parent

# Runs in a fresh interpreter where the FORBIDDEN packages and their submodules cannot be imported.
_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    FORBIDDEN = ("tensorflow", "reverb", "rlax", "distrax", "tensorflow_probability")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                raise ImportError(f"{name} is blocked: simulating a host without it")
            return None

    assert not [m for m in sys.modules if m.split(".")[0] in FORBIDDEN]
    sys.meta_path.insert(0, Block())

    import jax
    import numpy as np
    import rillet.learners.dqn as dqn
    import rillet.learners.pac, rillet.learners.r2d2  # noqa: F401  (import only)
    from rillet.learners.agents import agent_names
    assert {"dqn", "r2d2", "pac"} <= set(agent_names())  # the agent records need no TensorFlow either
    from rillet.datasets.specs import ArraySpec, StepSpec

    spec = StepSpec(ArraySpec((4,), "float32"), ArraySpec((), "int32"), num_actions=2)
    cfg = dqn.DQNConfig(hidden_sizes=(16,))
    state = dqn.init(jax.random.PRNGKey(0), spec, cfg)
    batch = {
        "observation": np.ones((8, 4), np.float32),
        "action": np.zeros(8, np.int32),
        "reward": np.ones(8, np.float32),
        "discount": np.full(8, 0.99, np.float32),
        "next_observation": np.ones((8, 4), np.float32),
    }
    dqn.check_batch_spec(spec, batch)
    state, metrics = dqn.update(state, batch, cfg)
    assert int(state.steps) == 1 and np.isfinite(float(metrics["loss"]))
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    assert not leaked, leaked
    print("ISOLATION-OK")
    """
)


def test_learners_run_without_tensorflow_reverb_or_rlax():
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=240,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0 and "ISOLATION-OK" in proc.stdout, proc.stderr[-4000:]


def _forbidden_imports(path: pathlib.Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if fname in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [f"{path.name}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    return found


def test_no_learner_module_imports_tensorflow_or_reverb():
    files = sorted(LEARNERS_DIR.rglob("*.py"))
    assert {"dqn.py", "mlp.py", "nature_dqn.py"} <= {f.name for f in files}
    problems = [p for f in files for p in _forbidden_imports(f)]
    assert not problems, problems
