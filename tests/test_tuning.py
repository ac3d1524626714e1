"""The per-CPU tuning of the Numba kernels: every profile chosen right, and every one correct.

``tuning_for`` is checked on feature sets of CPUs this machine is not; then the kernels are
compiled in subprocesses for an AVX2-only CPU and a baseline x86-64 (``NUMBA_CPU_NAME`` and
``NUMBA_CPU_FEATURES``, which Numba's code generator and ``tuning.py`` both read), and must
pick that profile, emit only that instruction set, and match the reference (float32 and uint8
pixels, an SGD epoch on 2 threads). On a CPU that is itself AVX2 without AVX-512 (Zen 3) the
forced AVX2 compilation is skipped: the whole suite runs that path there. On any CPU, the
microkernel takes the provider the tuning names, and the AMX provider compiles (never runs) to
tile instructions for a CPU said to have AMX, for uint8 pixels only.
"""

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba")

from fastlr.backends.numba import amx, microkernel, tiles  # noqa: E402
from fastlr.backends.numba.tuning import TUNING, Tuning, tuning_for  # noqa: E402

AVX512 = {"avx512f", "avx512bw", "avx2", "fma", "sse2"}
AVX2 = {"avx2", "fma", "avx", "sse2"}


def test_profiles_follow_the_features():
    assert tuning_for(AVX512, "x86_64").profile == "avx512"
    assert tuning_for(AVX512, "x86_64").vector_bytes == 64
    assert tuning_for(AVX2, "x86_64") == Tuning("avx2", 32, 2, 5, 5, 2, True)
    baseline = tuning_for({"sse2"}, "x86_64")
    assert baseline.profile == "baseline" and baseline.vector_bytes == 16 and not baseline.fused
    assert tuning_for({"avx2"}, "x86_64").profile == "baseline"  # AVX2 without FMA


def test_the_amx_tiles_follow_the_features_and_the_override():
    amx_cpu = {"avx512f", "avx512bw", "avx2", "fma", "sse2", "amx-tile", "amx-bf16"}
    assert tuning_for(amx_cpu, "x86_64").amx
    assert not tuning_for(amx_cpu - {"amx-bf16"}, "x86_64").amx
    assert not tuning_for(amx_cpu, "x86_64", "amx=0").amx
    assert not tuning_for(amx_cpu, "x86_64", "avx2").amx  # only with the AVX-512 tiles
    assert tuning_for(amx_cpu, "x86_64", "amx_min_chunk=64").amx_min_chunk == 64


INTERFACE = ("new_scratch", "thread_scratch", "padded_rows", "pack_weights", "score_block",
             "accumulate_gradient")


def test_the_microkernel_takes_the_provider_the_tuning_names():
    provider = amx if TUNING.amx else tiles
    for name in INTERFACE:
        assert getattr(microkernel, name) is getattr(provider, name), name


# Compiles (never runs) the AMX provider's block, pixels and float rows, for the host CPU with
# the AMX features added, and reports which tile instructions each compilation holds.
COMPILE_SCRIPT = textwrap.dedent("""
    import json
    from numba import njit, types
    from fastlr.backends.numba import amx, microkernel, tiles
    from fastlr.backends.numba.tuning import TUNING

    @njit
    def block(X, rows, n, ahead, n_ahead, W, scratch, S, G, part_W):
        amx.pack_weights(X, W, n, scratch)
        amx.score_block(X, rows, n, ahead, n_ahead, W, scratch, S)
        amx.accumulate_gradient(X, rows, n, ahead, n_ahead, G, part_W, True, scratch)

    def array(dtype, ndim):
        return types.Array(dtype, ndim, "C")

    scratch = types.Tuple((array(types.uint32, 2), array(types.uint32, 1),
                           array(types.uint32, 3), array(types.float32, 2),
                           array(types.bool_, 1)))
    found = {}
    for name, x in (("pixels", types.uint8), ("floats", types.float32)):
        sig = (array(x, 2), array(types.int64, 1), types.int64, array(types.int64, 1),
               types.int64, array(types.float32, 2), scratch, array(types.float32, 2),
               array(types.float32, 2), array(types.float32, 2))
        block.compile(sig)
        asm = block.inspect_asm(sig)
        found[name] = sorted(i for i in ("tdpbf16ps", "ldtilecfg", "tileloadd", "tilestored")
                             if i in asm)
    print(json.dumps({"amx": TUNING.amx, "chosen": microkernel.score_block is amx.score_block,
                      "found": found}))
""")


@pytest.mark.extended  # a compilation of its own, in a subprocess
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 only")
def test_the_amx_provider_compiles_to_tile_instructions_for_pixels_only(tmp_path):
    """The tiles' code, as an AMX CPU would get it: tile instructions for uint8 pixels with
    float32 weights, none for float rows. Compiled in a subprocess whose CPU features add
    AMX's to the host's and take away AVX-512 (so the avx2 profile, which never chooses AMX:
    the epoch keeps the vector tiles there, and nothing compiled runs)."""
    from numba.core.codegen import get_host_cpu_features

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    features = ",".join(f for f in get_host_cpu_features().split(",")
                        if not f[1:].startswith("avx512") and not f[1:].startswith("amx"))
    env = {k: v for k, v in os.environ.items() if k != "FASTLR_NUMBA_TUNING"}
    env.update(NUMBA_CPU_FEATURES=features + ",+amx-tile,+amx-bf16,-avx512f",
               NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=root)
    done = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], cwd=root, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not report["amx"] and not report["chosen"]
    assert report["found"]["pixels"] == ["ldtilecfg", "tdpbf16ps", "tileloadd", "tilestored"]
    assert report["found"]["floats"] == []


def test_pause_only_on_x86():
    assert tuning_for(AVX2, "x86_64").pause
    assert not tuning_for({"neon"}, "aarch64").pause


def test_the_override_names_a_profile_and_fields():
    assert tuning_for(AVX512, "x86_64", "avx2").profile == "avx2"
    forced = tuning_for(AVX512, "x86_64", "avx512, grad_vectors=1, pause=0")
    assert forced.grad_vectors == 1 and not forced.pause and forced.vector_bytes == 64
    assert not tuning_for({"sse2"}, "x86_64", "avx2").fused  # no FMA on the CPU: never fused
    assert tuning_for(AVX512, "x86_64", "block_kib=50").block_kib == 50
    with pytest.raises(ValueError, match="block_kib must be"):
        tuning_for(AVX2, "x86_64", "block_kib=0")


def test_a_block_is_the_same_bytes_of_rows_in_whole_score_tiles():
    from fastlr.backends.numba.epoch import BLOCK_BYTES, MAX_BLOCK, samples_per_block
    from fastlr.backends.numba.tiles import SCORE_SAMPLES
    if os.environ.get("FASTLR_NUMBA_TUNING"):
        pytest.skip("FASTLR_NUMBA_TUNING forces another tuning")
    assert BLOCK_BYTES == 100 * 1024
    assert samples_per_block(784 * 4) == 32  # MNIST's float32 features
    # its uint8 pixels: 130 rows of 784 bytes, in whole tiles of 2 (AVX2) or 4 (AVX-512)
    assert samples_per_block(784) == {2: 130, 4: 128}[SCORE_SAMPLES]
    assert samples_per_block(784 * 8) == 16  # float64
    assert samples_per_block(10**7) == SCORE_SAMPLES  # a row longer than a block: one tile
    assert samples_per_block(4) == MAX_BLOCK
    assert all(samples_per_block(b) % SCORE_SAMPLES == 0 for b in range(1, 5000, 7))
    with pytest.raises(ValueError, match="unknown field"):
        tuning_for(AVX2, "x86_64", "tile=3")
    with pytest.raises(ValueError, match="unknown profile"):
        tuning_for(AVX2, "x86_64", "avx1024")


FORCED_CPU_SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    from fastlr.backends import reference
    from fastlr.backends import numba as nb
    from fastlr.backends.check import TRAJECTORY_TOLERANCE, scaled_error
    from fastlr.backends.contract import SGDState, Samples, Steps, make_threads
    from fastlr.backends.numba.tiles import _gather_gradient, _gather_scores
    from fastlr.backends.numba.tuning import TUNING

    rng = np.random.default_rng(0)
    n, d = 203, 784
    pixels = rng.integers(0, 256, size=(n, d)).astype(np.uint8)
    perm = rng.permutation(n).astype(np.int64)
    errors = {}
    # 13 classes: classes left over after the full tiles of every profile.
    for c, name, X in ((c, f"{kind}, C = {c}", X) for c in (10, 13) for kind, X in (
            ("float32", (pixels / 255.0).astype(np.float32)), ("uint8", pixels))):
        y = rng.integers(0, c, size=n).astype(np.int64)
        W0 = (rng.standard_normal((c, d)) * 0.01).astype(np.float32)
        results = []
        for backend, Xb, dtype in ((nb, X, np.float32), (reference, pixels / 255.0, np.float64)):
            W, b = W0.astype(dtype), np.zeros(c, dtype)
            loss = backend.sgd_epoch(Samples(Xb, y, np.ones(n, dtype)),
                                     SGDState(W, b, np.zeros_like(W), np.zeros_like(b)),
                                     Steps(perm, np.full(4, 0.1), 64, 0.9, 1e-4),
                                     make_threads(2, c, d, dtype))
            loss = loss[0] if isinstance(loss, tuple) else loss
            results.append((W, b, loss))
        errors[name] = max(scaled_error(g, e) for g, e in zip(*results))
    asm = "".join(list(f.inspect_asm().values())[0] for f in (_gather_scores, _gather_gradient))
    print(json.dumps({"profile": TUNING.profile, "errors": errors,
                      "tolerance": TRAJECTORY_TOLERANCE[np.dtype(np.float32)],
                      "zmm": "zmm" in asm, "ymm": "ymm" in asm, "fma": "vfmadd" in asm}))
""")


@pytest.mark.extended
@pytest.mark.parametrize("cpu,features,profile", [
    ("haswell", "+avx,+avx2,+fma,+sse4.2,-avx512f", "avx2"),
    ("x86-64", "+sse2,-avx,-avx2,-fma,-avx512f", "baseline"),
])
def test_kernels_compiled_for_another_cpu_match_the_reference(tmp_path, cpu, features,
                                                              profile):
    from fastlr.backends.numba.tuning import TUNING
    # Unforced, TUNING.profile is the one this CPU compiles itself (tuning_for): no AVX-512.
    if TUNING.profile == profile and not os.environ.get("FASTLR_NUMBA_TUNING"):
        pytest.skip(f"this CPU compiles the {profile} profile itself, with no AVX-512: "
                    "every Numba test here runs that path")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "FASTLR_NUMBA_TUNING"}
    env.update(NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES=features, NUMBA_NUM_THREADS="2",
               NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=root)
    done = subprocess.run([sys.executable, "-c", FORCED_CPU_SCRIPT], cwd=root, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["profile"] == profile
    assert not report["zmm"]  # no AVX-512 instruction where the CPU has none
    assert report["ymm"] == (profile == "avx2")
    assert report["fma"] == (profile == "avx2")
    for name, error in report["errors"].items():
        assert error <= report["tolerance"], (name, error)
