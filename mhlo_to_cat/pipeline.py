"""The mhlo_to_cat pipeline: a readable list of named passes, run in order on every function."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from foundation.ir import Module
from mhlo_to_cat.attention_patterns import (
    AttentionFromBmmSoftmaxBmm,
    DataMovementCancelsAcrossSoftmax,
    PermuteIntoAttention,
    RepeatHeadsAfterTranspose,
    SinkScalarMultiplyBelowDataMovement,
    SoftmaxFirstInPvBmm,
)
from mhlo_to_cat.conv_patterns import (
    ConvActivationFusion,
    ConvChannelAffineFolding,
    ConvolutionInLinalgForm,
    ConvolutionToCatConv,
    ConvResidualFusion,
    InputDilationAsInteriorPadding,
    PatchifyConvolutionToGemm,
)
from mhlo_to_cat.gemm_patterns import (
    BatchDimsFirst,
    BiasAddBeforeHeadSplit,
    BmmWithSharedWeightToGemm,
    DotGeneralToBmm,
    DotGeneralToGemm,
    GemmActivationFusion,
    GemmBiasFusion,
    GemmBinaryEpilogueFusion,
    GemmColumnScaleFolding,
    GroupedHeadsDotGeneral,
    HalfDotWithWideResult,
    MultiDimWeightToGemm,
    PermuteIntoGemmOrBmm,
    ReshapeIntoGemm,
    TransposeIntoBmmOutput,
)
from mhlo_to_cat.normalize import (
    CommonSubexpressionElimination,
    ComposeReshapes,
    ComposeTransposes,
    DeadCodeElimination,
    IotaFromConstant,
    RemoveIdentityShapeOps,
    RemoveIdentityTranspose,
    normalization_passes,
)
from mhlo_to_cat.precision_patterns import (
    FoldConvertRoundTrip,
    NarrowUpcastAttention,
    NarrowUpcastGemm,
    SinkConvertBelowDataMovement,
)
from mhlo_to_cat.rewriter import Pass, PatternPass
from mhlo_to_cat.rowwise_patterns import (
    CentredFromBatchNormForm,
    NormAffineFusion,
    RowwiseFromReduce,
    ScaleAfterNormalisation,
)
from mhlo_to_cat.scatter_patterns import ScatterAsIndexCopy, ScatterOfOneWindowAsUpdateSlice


def recognition_passes() -> list[Pass]:
    return [
        PatternPass("scatter-of-one-window-to-update-slice", [ScatterOfOneWindowAsUpdateSlice()]),
        PatternPass("kv-cache-writes", [ScatterAsIndexCopy()]),
        PatternPass("dot-general-batch-dims-first", [GroupedHeadsDotGeneral(), BatchDimsFirst()]),
        PatternPass("half-dot-with-wide-result", [HalfDotWithWideResult()]),
        PatternPass("dot-general-to-gemm-and-bmm", [DotGeneralToGemm(), MultiDimWeightToGemm(), DotGeneralToBmm(),
                                                    TransposeIntoBmmOutput(), BmmWithSharedWeightToGemm(),
                                                    ReshapeIntoGemm(), PatchifyConvolutionToGemm()]),
        PatternPass("convolution-to-cat-conv", [InputDilationAsInteriorPadding(), ConvolutionToCatConv()]),
        PatternPass("convolutions-left-in-linalg-form", [ConvolutionInLinalgForm()]),
        PatternPass("conv-epilogue-fusion", [ConvChannelAffineFolding(), ConvResidualFusion(), ConvActivationFusion(),
                                             ComposeTransposes(), RemoveIdentityTranspose(), FoldConvertRoundTrip()]),
        PatternPass("gemm-bias-fusion-and-narrowing", [BiasAddBeforeHeadSplit(), GemmBiasFusion(), NarrowUpcastGemm()]),
        PatternPass("gemm-activation-fusion", [GemmActivationFusion()]),
        PatternPass("norm-scale-applied-last", [CentredFromBatchNormForm(), ScaleAfterNormalisation()]),
        PatternPass("softmax-and-norm-recognition", [RowwiseFromReduce()]),
        PatternPass("norm-affine-fusion", [NormAffineFusion()]),
        PatternPass("sink-scalar-multiplies", [SinkScalarMultiplyBelowDataMovement()]),
        PatternPass("data-movement-across-softmax", [DataMovementCancelsAcrossSoftmax(), ComposeTransposes(),
                                                     ComposeReshapes(), RemoveIdentityShapeOps(),
                                                     RemoveIdentityTranspose(), RepeatHeadsAfterTranspose()]),
        PatternPass("softmax-first-in-pv-bmm", [SoftmaxFirstInPvBmm()]),
        PatternPass("attention-recognition", [AttentionFromBmmSoftmaxBmm()]),
        PatternPass("attention-precision", [NarrowUpcastAttention(), SinkConvertBelowDataMovement(),
                                            FoldConvertRoundTrip()]),
        PatternPass("gemm-binary-epilogue-fusion", [ReshapeIntoGemm(), GemmColumnScaleFolding(),
                                                    GemmBinaryEpilogueFusion()]),
        PatternPass("permute-into-gemm-bmm-and-attention", [ComposeTransposes(), RemoveIdentityTranspose(),
                                                             PermuteIntoGemmOrBmm(), PermuteIntoAttention()]),
        CommonSubexpressionElimination(),
        DeadCodeElimination(),
    ]


def default_pipeline() -> list[Pass]:
    return normalization_passes() + recognition_passes()


def dynamic_shape_pipeline() -> list[Pass]:
    """For a model compiled for a range of sizes: what folding made of size-dependent iotas goes back to iota, and
    reshape chains that recognition left are composed, so that every size partitions alike."""
    return default_pipeline() + [PatternPass("constants-as-iota-and-reshape-chains", [
        IotaFromConstant(), ComposeReshapes(), RemoveIdentityShapeOps()]), DeadCodeElimination()]


def run_pipeline(module: Module, passes: Sequence[Pass] | None = None,
                 on_pass: Callable[[Pass], None] | None = None) -> Module:
    """Run ``passes`` (default: normalisation then recognition) on every function of ``module`` in place."""
    for p in passes if passes is not None else default_pipeline():
        if on_pass:
            on_pass(p)
        for fn in module.functions.values():
            p.run(fn)
    return module
