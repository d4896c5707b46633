"""precision_errors: float32 sits at round-off, bfloat16 at its ~3 significant digits, and overflow is reported."""

import math

import pytest

from kernelized.eval.precision import precision_errors, table

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("kernel", ["softmax", "rebased", "gmm-prf"])
def test_errors_sit_at_each_dtypes_resolution(kernel):
    e = precision_errors(kernel, scale=1.0, T=32)
    assert e["fp32"] < 1e-5  # float32 round-off (eps 1.2e-7) through a few matmuls
    assert 1e-4 < e["bf16"] < 5e-2  # bfloat16 keeps 8 bits of mantissa (eps 7.8e-3)
    assert 1e-4 < e["autocast_bf16"] < 5e-2


def test_a_non_finite_output_reads_as_inf_and_the_table_lists_every_cell():
    assert math.isinf(precision_errors("elu", scale=float("inf"), T=8)["fp32"])
    text = table(["elu", "softmax"], (1.0, 2.0), T=8)
    assert text.count("\n") == 1 + 4 and "| softmax | 2 |" in text
