"""Sequence-model probes: a hand-set one-layer model against a direct computation, Jacobians against
finite differences, bf16 compute, the separator transform and window masks at exact positions, the
model signature check, and the `rillet probe` commands."""

import contextlib
import io
import itertools
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.errors import ConfigError, SignatureError
from rillet.evals.probes.collapse import collapse_length, collapse_profile, pair_distances
from rillet.evals.probes.inputs import insert_separators, ones, ones_zero, separator_positions, with_separators
from rillet.evals.probes.model_api import (_run_rows, check_sequence_model, last_states, plan_rows, plan_tree,
                                          subtree_end, tree_mask)
from rillet.evals.probes.oversquash import jacobian_norms, path_bound, region_means
from rillet.evals.probes.tasks import SEPARATOR, task_batch
from rillet.learners.networks.attention import cast_floating
from rillet.learners.networks.transformer import DecoderTransformer, TransformerConfig


def tiny(**kw):
    cfg = dict(vocab_size=3, d_model=8, num_heads=2, num_layers=2, mlp_ratio=2, num_outputs=3)
    return DecoderTransformer(TransformerConfig(**{**cfg, **kw}), jax.random.PRNGKey(0))


# --- a hand-set one-layer, one-head model against a direct computation ---------------------------

def _hand_set_model():
    m = DecoderTransformer(TransformerConfig(vocab_size=2, d_model=4, num_heads=1, num_layers=1, mlp_ratio=1,
                                             num_outputs=2, positions="none"), jax.random.PRNGKey(0))
    w = {"embedding": np.array([[1.0, -1.0, 0.5, 0.0], [0.0, 2.0, -1.0, 1.0]]),
         "q": np.eye(4) * 0.8, "k": np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]]),
         "v": np.diag([1.0, 0.5, -1.0, 2.0]), "o": np.eye(4), "w1": np.full((4, 4), 0.25) - np.eye(4) * 0.5,
         "w2": np.eye(4)[::-1] * 0.3}
    f = lambda a: jnp.asarray(a, jnp.float32)[None]  # noqa: E731  (stacked layers: leading [1])
    m = eqx.tree_at(lambda t: t.embedding, m, jnp.asarray(w["embedding"], jnp.float32))
    m = eqx.tree_at(lambda t: (t.layers.q.weight, t.layers.kv.weight, t.layers.out.weight, t.layers.mlp_in.weight,
                               t.layers.mlp_out.weight), m,
                    (f(w["q"]), f(np.concatenate([w["k"], w["v"]], 1)), f(w["o"]), f(w["w1"]), f(w["w2"])))
    return m, w


def _direct_last(w, tokens):
    """The block by hand in float64: x + Wo·softmax(qk^T/2 causal)v, then x + W2·gelu(W1·LN(x))."""
    ln = lambda x: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)  # noqa: E731
    gelu = lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))  # noqa: E731
    x = w["embedding"][tokens]
    a = ln(x)
    q, k, v = a @ w["q"], a @ w["k"], a @ w["v"]
    s = q @ k.T / 2.0 + np.where(np.tril(np.ones((len(x),) * 2)) > 0, 0, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    x = x + (p / p.sum(-1, keepdims=True)) @ v @ w["o"]
    return (x + gelu(ln(x) @ w["w1"]) @ w["w2"])[-1]


def test_hand_set_one_layer_distance_matches_direct_computation():
    model, w = _hand_set_model()
    lengths = [1, 2, 5, 9]
    d = pair_distances(model, lengths, ones_zero)
    for row, n in enumerate(lengths):
        a, b = ones_zero(n)
        diff = _direct_last(w, a) - _direct_last(w, b)
        np.testing.assert_allclose(d["inf"][row, 0], np.abs(diff).max(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(d["l1"][row, 0], np.abs(diff).sum(), rtol=1e-4, atol=1e-6)
    assert d["inf"][0, 0] > 1e-3


def test_jacobian_profile_matches_finite_differences():
    model, tokens, eps = tiny(), jnp.array([0, 2, 1, 1, 2]), 1e-2
    layers, output = jacobian_norms(model, tokens)
    emb = np.asarray(model.embed(tokens), np.float32)
    f = jax.jit(lambda e: jnp.concatenate([model(e).hidden[:, -1].ravel(), model(e).output[-1]]))
    cols = np.zeros((f(emb).shape[0],) + emb.shape)
    for i, j in itertools.product(*map(range, emb.shape)):
        up, down = emb.copy(), emb.copy()
        up[i, j] += eps
        down[i, j] -= eps
        cols[:, i, j] = (np.asarray(f(up)) - np.asarray(f(down))) / (2 * eps)
    fd_layers = np.sqrt((cols[:16].reshape(2, 8, 5, 8) ** 2).sum((1, 3)))
    fd_output = np.sqrt((cols[16:] ** 2).sum((0, 2)))
    np.testing.assert_allclose(np.asarray(layers), fd_layers, rtol=2e-2, atol=1e-4)
    np.testing.assert_allclose(np.asarray(output), fd_output, rtol=2e-2, atol=1e-4)


# --- bf16 -----------------------------------------------------------------------------------------

def _dot_dtypes(fn, *args):
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                found.append(str(eqn.invars[0].aval.dtype))
            for p in eqn.params.values():
                inner = getattr(p, "jaxpr", p)
                if hasattr(inner, "eqns"):
                    walk(inner)
    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def test_probe_computes_in_bf16_only_when_asked():
    rows = jnp.ones((2, 8), jnp.int32)
    model = tiny()
    fp, bf = _dot_dtypes(lambda r: _run_rows(model, r), rows), _dot_dtypes(
        lambda r: _run_rows(cast_floating(model, jnp.bfloat16), r), rows)
    assert fp and set(fp) == {"float32"}, fp
    assert bf and set(bf) == {"bfloat16"}, bf
    res = collapse_profile(model, [2, 3], "ones", dtypes=("bfloat16",))["dtypes"]["bfloat16"]
    d = np.asarray(res["inf"], np.float32)
    assert np.all(d == np.asarray(jnp.asarray(d, jnp.bfloat16).astype(jnp.float32)))  # bf16-representable


# --- separators, windows, path counts: exact positions --------------------------------------------

def test_separator_transform_exact_positions():
    np.testing.assert_array_equal(insert_separators(np.array([1, 2, 3, 4, 5]), 2, 9), [1, 2, 9, 3, 4, 9, 5])
    np.testing.assert_array_equal(insert_separators(np.arange(6), 3, 9), [0, 1, 2, 9, 3, 4, 5])  # none last
    np.testing.assert_array_equal(insert_separators(np.array([[1, 2, 3]] * 2), 1, 0), [[1, 0, 2, 0, 3]] * 2)
    np.testing.assert_array_equal(insert_separators(np.array([7, 7]), 0, 9), [7, 7])
    np.testing.assert_array_equal(separator_positions(5, 2), [0, 1, 3, 4, 6])
    a, b = with_separators(ones, 2, 4)(3)
    np.testing.assert_array_equal(a, [1, 1, 4, 1])
    np.testing.assert_array_equal(b, [1, 1, 4, 1, 1])


@pytest.mark.parametrize("layers, first_seen", [(1, 4), (2, 3)])
def test_sliding_window_attends_exactly_the_window(layers, first_seen):
    model = tiny(num_layers=layers, window=2)
    per_layer, output = jacobian_norms(model, jnp.array([0, 1, 2, 0, 1, 2]))
    out = np.asarray(output)
    assert np.all(out[:first_seen] == 0) and np.all(out[first_seen:] > 0), out
    full, _ = jacobian_norms(tiny(num_layers=layers), jnp.array([0, 1, 2, 0, 1, 2]))
    assert np.all(np.asarray(full)[-1] > 0)


@pytest.mark.parametrize("window", [0, 3])
def test_path_bound_counts_and_weighs_every_causal_path(window):
    length, layers = 6, 3
    step = np.array([[1.0 if i <= k and (window == 0 or k - i < window) else 0.0 for i in range(length)]
                     for k in range(length)])
    for weighting, m in (("count", step + np.eye(length)),
                         ("uniform", step / step.sum(1, keepdims=True) + np.eye(length))):
        brute = np.zeros(length)
        for path in itertools.product(range(length), repeat=layers):  # k_0 = path[0], ..., k_L = n
            ks = path + (length - 1,)
            brute[ks[0]] += np.prod([m[ks[t + 1], ks[t]] for t in range(layers)])
        np.testing.assert_allclose(path_bound(length, layers, window, weighting), brute, rtol=1e-12)
    assert path_bound(6, 3)[0] > path_bound(6, 3)[4]  # early tokens have more paths


def test_region_means_on_a_hand_profile():
    profile = np.arange(1.0, 17.0)  # T = 16: early 0..3, middle 6..9, late 12..14, max 16
    got = region_means(profile)
    expected = {"first": 1 / 16, "early": 2.5 / 16, "middle": 8.5 / 16, "late": 14 / 16, "last": 1.0,
                "first_raw": 1.0, "last_raw": 16.0}
    assert got.keys() == expected.keys()
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-12)
    with pytest.raises(ConfigError, match="length >= 8"):
        region_means(np.ones(4))


def test_rows_are_shared_by_prefixes_only_for_causal_models():
    seqs = [s for n in (2, 5, 9) for s in ones(n)]
    rows, reads = plan_rows(seqs, causal=True)
    assert len(rows) == 1 and [p for _, p in reads] == [1, 2, 4, 5, 8, 9]
    rows, reads = plan_rows(seqs, causal=False)
    assert len(rows) == 6 and all(p == -1 for _, p in reads)
    assert collapse_length([4, 8, 16, 32], np.array([True, False, True, True])) == 16
    assert collapse_length([4, 8], np.array([True, False])) is None


def test_prefix_tree_plan_and_mask_exact():
    tokens, positions, parent, reads = plan_tree([np.array([1, 1, 0]), np.array([1, 1, 1, 0]), np.array([2])])
    assert tokens.tolist() == [1, 1, 0, 1, 0, 2] and positions.tolist() == [0, 1, 2, 2, 3, 0]
    assert parent.tolist() == [-1, 0, 1, 1, 3, -1] and reads == [2, 4, 5]
    mask = tree_mask(parent, 8)
    assert np.flatnonzero(mask[4]).tolist() == [0, 1, 3, 4] and np.flatnonzero(mask[7]).tolist() == [7]
    # a later sequence branching from an earlier node: renumbered so that every subtree is contiguous
    tokens, positions, parent, reads = plan_tree([np.array([1, 2]), np.array([3]), np.array([1, 4])])
    assert tokens.tolist() == [1, 2, 4, 3] and parent.tolist() == [-1, 0, 0, -1] and reads == [1, 3, 2]
    assert subtree_end(parent, 6).tolist() == [3, 2, 3, 4, 5, 6]
    mask = tree_mask(parent, 6)
    assert [np.flatnonzero(m).tolist() for m in mask] == [[0], [0, 1], [0, 2], [3], [4], [5]]


@pytest.mark.parametrize("positions,window", [("rotary", 0), ("sinusoidal", 2)])
def test_prefix_tree_states_equal_separate_rows(positions, window):
    """One prefix-tree row (tree_attention) gives the states of running each sequence alone."""
    model = tiny(positions=positions, window=window)
    seqs = [s for n in (2, 3, 6) for s in with_separators(ones_zero, 2, 2)(n)]
    tree, rows = last_states(model, seqs), last_states(model, seqs, tree=False)
    for a, b in zip(tree, rows):
        np.testing.assert_allclose(a, b, atol=1e-5)
    bf16 = cast_floating(model, jnp.bfloat16)
    np.testing.assert_array_equal(last_states(bf16, seqs)[0], last_states(bf16, seqs, tree=False)[0])


def test_task_batches_label_and_separate_correctly():
    tokens, last, labels = task_batch("count", np.random.default_rng(0), 16, (5, 9), separator_every=2)
    assert tokens.shape == (16, 9 + 4)
    for t, n, k in zip(tokens, last, labels):
        data = t[: n + 1]
        assert data[n] != SEPARATOR and np.all(data[2::3] == SEPARATOR) and (data == 1).sum() == k
    tokens, last, labels = task_batch("copy_first", np.random.default_rng(0), 8, (3, 3))
    np.testing.assert_array_equal(labels, tokens[:, 0])
    with pytest.raises(ConfigError, match="unknown task"):
        task_batch("sort", np.random.default_rng(0), 1, (3, 3))


def test_copy_last_labels_the_last_data_token_behind_separators_and_padding():
    tokens, last, labels = task_batch("copy_last", np.random.default_rng(0), 32, (2, 9), separator_every=3)
    assert tokens.shape == (32, 9 + 2) and len(set(last.tolist())) > 1
    for t, n, y in zip(tokens, last, labels):
        assert t[n] == y and y != SEPARATOR and np.all(t[n + 1:] == 0)
        assert np.array_equal(t[: n + 1], insert_separators(t[: n + 1][t[: n + 1] != SEPARATOR], 3, SEPARATOR))


# --- the model signature --------------------------------------------------------------------------

class CumulativeMean(eqx.Module):
    """A user model: hidden [1, T, d] = running mean of the embeddings; output [T, 1]."""

    table: jax.Array
    causal: bool = eqx.field(static=True, default=True)

    def embed(self, tokens):
        return self.table[tokens]

    def __call__(self, inputs):
        x = self.embed(inputs) if jnp.issubdtype(inputs.dtype, jnp.integer) else inputs
        h = jnp.cumsum(x, 0) / jnp.arange(1, x.shape[0] + 1, dtype=x.dtype)[:, None]
        return h[None], h[:, :1]


class NoEmbed(eqx.Module):
    w: jax.Array

    def __call__(self, x):
        return x


class OneArray(CumulativeMean):
    def __call__(self, inputs):
        return super().__call__(inputs)[0]


def test_user_model_is_accepted_and_gives_the_analytic_distance():
    model = CumulativeMean(jnp.array([[0.0, 0.0], [1.0, 0.0]]))
    lengths = [1, 3, 10, 100]
    res = collapse_profile(model, lengths, "ones_zero", dtypes=("float32",))["dtypes"]["float32"]
    expected = [1.0 / ((n + 1) * (n + 2)) for n in lengths]  # n/(n+1) - (n+1)/(n+2)
    np.testing.assert_allclose(np.asarray(res["inf"])[:, 0], expected, rtol=1e-5, atol=1e-7)  # fp32 cancellation
    noncausal = CumulativeMean(model.table, causal=False)
    res2 = collapse_profile(noncausal, lengths, "ones_zero", dtypes=("float32",))["dtypes"]["float32"]
    np.testing.assert_allclose(res2["inf"], res["inf"], rtol=1e-5)


@pytest.mark.parametrize("bad, message", [
    (lambda t: t, "not an eqx.Module"),
    (NoEmbed(jnp.zeros(2)), "no embed"),
    (OneArray(jnp.zeros((2, 2))), "not a \\(hidden, output\\) pair"),
])
def test_model_without_the_signature_is_refused_clearly(bad, message):
    with pytest.raises(SignatureError, match=message) as e:
        collapse_profile(bad, [2, 4])
    assert isinstance(e.value, ConfigError) and "embed(tokens [T] int)" in str(e.value)
    assert check_sequence_model(tiny()).num_layers == 2


# --- the command line -----------------------------------------------------------------------------

def _rillet(*args):
    from rillet.pipelines.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = main(list(args))
        except SystemExit as e:
            code = e.code
    return code, out.getvalue()


def test_probe_commands_help_and_a_tiny_run(tmp_path):
    for args in (["probe", "--help"], ["probe", "collapse", "--help"], ["probe", "oversquash", "--help"],
                 ["probe", "task", "--help"], ["probe", "plot", "--help"]):
        code, out = _rillet(*args)
        assert code == 0 and "usage" in out.lower(), args
    code, out = _rillet("probe", "oversquash", "--out-dir", str(tmp_path), "--length", "6", "--num-sequences", "2",
                        "--model.transformer.d-model", "8", "--model.transformer.num-heads", "2")
    assert code == 0, out
    result = json.loads((tmp_path / "oversquash.json").read_text())
    assert len(result["output"]) == 6 and len(result["bound"]) == 6 and (tmp_path / "oversquash.png").stat().st_size
