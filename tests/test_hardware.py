"""config.model.matmul_dtype='auto' follows what the hardware has, read from /proc/cpuinfo, never assumed."""

import jax

from bert_jax import hardware

_ZEN5 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n\n"
_SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    zen5, skylake = tmp_path / "zen5", tmp_path / "skylake"
    zen5.write_text(_ZEN5)
    skylake.write_text(_SKYLAKE)
    assert hardware.cpu_has_bf16_matmul(hardware.cpu_flags(str(zen5)))
    assert "avx512f" in hardware.cpu_flags(str(skylake))
    assert not hardware.cpu_has_bf16_matmul(hardware.cpu_flags(str(skylake)))
    assert hardware.cpu_flags(str(tmp_path / "missing")) == frozenset()  # not Linux: no bf16 assumed


def test_auto_is_bf16_only_where_the_hardware_multiplies_bf16():
    avx512_bf16, avx2 = frozenset({"avx2", "avx512_bf16"}), frozenset({"avx2", "fma"})
    assert hardware.resolve_matmul_dtype("auto", "cpu", avx512_bf16) == "bfloat16"
    assert hardware.resolve_matmul_dtype("auto", "cpu", frozenset({"amx_bf16"})) == "bfloat16"
    assert hardware.resolve_matmul_dtype("auto", "cpu", avx2) == "float32"
    assert hardware.resolve_matmul_dtype("auto", "gpu", avx2) == "bfloat16"
    assert hardware.resolve_matmul_dtype("auto", "tpu", frozenset()) == "bfloat16"
    assert hardware.resolve_matmul_dtype("float32", "gpu", avx512_bf16) == "float32"
    assert hardware.resolve_matmul_dtype("bfloat16", "cpu", avx2) == "bfloat16"


def test_auto_on_this_machine_follows_its_own_cpuinfo():
    expected = "bfloat16" if hardware.cpu_has_bf16_matmul() else "float32"
    assert jax.default_backend() != "cpu" or hardware.resolve_matmul_dtype("auto") == expected
