"""A GPU profile's kernels by name (``londonlm.training.step.kernels``): each kernel of the real
libraries in its group, the per-step arithmetic with overlapping kernels counted once, and only the
GPU's own activity taken from a profiler's events."""
import pytest

from londonlm.training.step import kernels


@pytest.mark.parametrize("name, group", [
    ("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NTN", "GEMM"),  # cuBLAS on Hopper
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64_warpgroupsize2x1x1_execute_segment_k_off_"
     "kernel__5x_cublas", "GEMM"),
    ("cutlass3x_sm90_tensorop_gemm_bf16_bf16_f32_bf16_bf16_128x256x64_1x2x1_0_tnn_align8_warpspecialized", "GEMM"),
    ("triton_tem_fused_addmm_0", "GEMM"),  # an Inductor GEMM template
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, "
     "cutlass::bfloat16_t, Flash_kernel_traits<64, 128, 128, 4, cutlass::bfloat16_t> >, false, true>", "attention"),
    ("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_kernel_traits<64>>", "attention"),
    ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<...>::Params)", "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x64_4x1x1_kernel0_0", "attention"),
    ("triton_red_fused__log_softmax__to_copy_nll_loss_forward_3", "Inductor's fused kernels"),
    ("triton_poi_fused__scaled_dot_product_flash_attention_view_2", "Inductor's fused kernels"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
     "TensorListMetadata<4>, at::native::(anonymous namespace)::FusedAdamMathFunctor<float, 4>>", "optimizer"),
    ("Memcpy HtoD (Pageable -> Device)", "copies and fills"),
    ("Memset (Device)", "copies and fills"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, std::array<char*, 1>>",
     "copies and fills"),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float>", "softmax and loss (eager)"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float, float>",
     "norms and elementwise (eager)"),
    ("ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "communication"),
    ("void cub::DeviceRadixSortOnesweepKernel<...>", "other kernels"),
])
def test_kernels_of_the_real_libraries_fall_in_their_groups(name, group):
    assert kernels.kernel_group(name) == group
    assert group in kernels.GROUPS


def test_a_kernel_breakdown_charges_each_groups_time_to_the_step_and_counts_overlaps_once():
    """Two steps in 1,000 µs: the GEMMs 300 µs, attention 200 µs on another stream overlapping
    a GEMM by 50 µs, a Triton kernel 100 µs; the GPU is busy 550 µs (the overlap once), idle 450."""
    ks = [("nvjet_a", 0, 100), ("flash_fwd_kernel", 50, 250), ("nvjet_a", 300, 400), ("nvjet_b", 500, 600),
          ("triton_poi_fused_add_0", 700, 750), ("triton_poi_fused_add_0", 800, 850)]
    out = kernels.breakdown(ks, wall_us=1000.0, steps=2)
    assert (out["step_ms"], out["gpu_busy_ms"], out["gpu_idle_ms"]) == (0.5, 0.275, 0.225)
    assert out["gpu_busy_share"] == 0.55 and out["kernels_per_step"] == 3.0
    assert {g["group"]: g["ms_per_step"] for g in out["groups"]} == {
        "GEMM": 0.15, "attention": 0.1, "Inductor's fused kernels": 0.05}
    assert [(t["kernel"], t["runs_per_step"], t["ms_per_step"]) for t in out["top"]] == [
        ("nvjet_a", 1.0, 0.1), ("flash_fwd_kernel", 0.5, 0.1), ("nvjet_b", 0.5, 0.05),
        ("triton_poi_fused_add_0", 1.0, 0.05)]  # ties in the order first run
    assert kernels.busy_us([(0, 10), (2, 5), (20, 30), (25, 40)]) == 30
    assert kernels.busy_us([]) == 0


def test_only_the_gpus_own_activity_is_counted_not_annotation_spans_or_host_ops():
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    def ev(name, device, start, end, annotation=False):
        return SimpleNamespace(name=name, device_type=device, is_user_annotation=annotation,
                               time_range=SimpleNamespace(start=start, end=end))

    events = [ev("aten::mm", DeviceType.CPU, 0, 90), ev("nvjet_a", DeviceType.CUDA, 10, 60),
              ev("## forward ##", DeviceType.CUDA, 0, 100, annotation=True), ev("Memset (Device)", DeviceType.CUDA, 70, 72)]
    assert kernels.device_kernels(events) == [("nvjet_a", 10, 60), ("Memset (Device)", 70, 72)]
