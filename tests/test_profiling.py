"""The profiled step's device timeline: union of kernel intervals, exposed communication, idle gaps."""

from types import SimpleNamespace

import pytest

from llmhpc import profiling


def test_covered_merges_overlapping_and_touching_intervals():
    assert profiling.covered([]) == 0
    assert profiling.covered([(0, 10), (5, 15), (15, 20), (30, 40), (32, 35)]) == 30


def test_timeline_separates_hidden_from_exposed_communication_and_idle_gaps():
    kernels = [(0, 1000, False), (500, 1500, True),  # a collective half hidden behind compute: 500 us exposed
               (2000, 3000, False), (2200, 2800, True),  # fully hidden
               (4000, 4500, True)]  # alone: exposed; gaps of 500 and 1000 us with nothing running
    t = profiling.device_timeline(kernels)
    assert t == {"span": 4.5, "busy": 3.0, "compute": 2.0, "communication": 2.1, "communication_exposed": 1.0,
                 "idle": 1.5}
    line = profiling.describe(t)
    assert "1.0 ms with no compute beside it (22 %)" in line and "nothing running 1.5 ms (33 %)" in line
    assert profiling.device_timeline([]) == {} and profiling.describe({}) == "no device kernels recorded"


@pytest.mark.parametrize("name, comm", [("ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)", True),
                                        ("nccl:reduce_scatter", True), ("c10d::allreduce_", True),
                                        ("sm90_xmma_gemm_e4m3bf16_e4m3f32_f32_tn_n", False),
                                        ("triton_red_fused_abs_amax_0", False)])
def test_collectives_are_told_from_compute_by_name(name, comm):
    assert profiling.is_communication(name) is comm


def test_only_device_kernels_with_a_time_range_become_intervals():
    span = lambda s, e: SimpleNamespace(start=s, end=e)  # noqa: E731
    events = [SimpleNamespace(name="aten::mm", device_type="DeviceType.CPU", time_range=span(0, 100)),
              SimpleNamespace(name="gemm", device_type="DeviceType.CUDA", time_range=span(10, 60)),
              SimpleNamespace(name="ncclDevKernel_AllGather", device_type="DeviceType.CUDA", time_range=span(50, 90)),
              SimpleNamespace(name="empty", device_type="DeviceType.CUDA", time_range=span(95, 95))]
    assert profiling.kernel_intervals(events) == [(10.0, 60.0, False), (50.0, 90.0, True)]
