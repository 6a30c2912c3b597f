// Flax-style self-attention as JAX lowers it: projections as dot_general on [B, S, D] x [D, H, K] weights,
// QK^T and PV as einsums with batch dims in the middle ('bqhd,bkhd->bhqk', 'bhqk,bkhd->bqhd'),
// scaling of the query, a causal mask built from iota, and jax.nn.softmax.
module @jit_attention {
  func.func public @main(%x: tensor<2x16x64xf32>, %wq: tensor<64x4x16xf32>, %wk: tensor<64x4x16xf32>,
                         %wv: tensor<64x4x16xf32>) -> tensor<2x16x4x16xf32> {
    %q0 = stablehlo.dot_general %x, %wq, contracting_dims = [2] x [0] : (tensor<2x16x64xf32>, tensor<64x4x16xf32>) -> tensor<2x16x4x16xf32>
    %k = stablehlo.dot_general %x, %wk, contracting_dims = [2] x [0] : (tensor<2x16x64xf32>, tensor<64x4x16xf32>) -> tensor<2x16x4x16xf32>
    %v = stablehlo.dot_general %x, %wv, contracting_dims = [2] x [0] : (tensor<2x16x64xf32>, tensor<64x4x16xf32>) -> tensor<2x16x4x16xf32>
    %scale = stablehlo.constant dense<2.500000e-01> : tensor<2x16x4x16xf32>
    %q = stablehlo.multiply %q0, %scale : tensor<2x16x4x16xf32>
    %s = stablehlo.dot_general %q, %k, batching_dims = [0, 2] x [0, 2], contracting_dims = [3] x [3] : (tensor<2x16x4x16xf32>, tensor<2x16x4x16xf32>) -> tensor<2x4x16x16xf32>
    %row = stablehlo.iota dim = 0 : tensor<16x16xi32>
    %col = stablehlo.iota dim = 1 : tensor<16x16xi32>
    %keep = stablehlo.compare GE, %row, %col, SIGNED : (tensor<16x16xi32>, tensor<16x16xi32>) -> tensor<16x16xi1>
    %keepb = stablehlo.broadcast_in_dim %keep, dims = [2, 3] : (tensor<16x16xi1>) -> tensor<2x4x16x16xi1>
    %ninf = stablehlo.constant dense<-3.40282347E+38> : tensor<2x4x16x16xf32>
    %sm = stablehlo.select %keepb, %s, %ninf : tensor<2x4x16x16xi1>, tensor<2x4x16x16xf32>
    %neg = stablehlo.constant dense<0xFF800000> : tensor<f32>
    %zero = stablehlo.constant dense<0.000000e+00> : tensor<f32>
    %m = stablehlo.reduce(%sm init: %neg) applies stablehlo.maximum across dimensions = [3] : (tensor<2x4x16x16xf32>, tensor<f32>) -> tensor<2x4x16xf32>
    %mb = stablehlo.broadcast_in_dim %m, dims = [0, 1, 2] : (tensor<2x4x16xf32>) -> tensor<2x4x16x16xf32>
    %d = stablehlo.subtract %sm, %mb : tensor<2x4x16x16xf32>
    %e = stablehlo.exponential %d : tensor<2x4x16x16xf32>
    %z = stablehlo.reduce(%e init: %zero) applies stablehlo.add across dimensions = [3] : (tensor<2x4x16x16xf32>, tensor<f32>) -> tensor<2x4x16xf32>
    %zb = stablehlo.broadcast_in_dim %z, dims = [0, 1, 2] : (tensor<2x4x16xf32>) -> tensor<2x4x16x16xf32>
    %p = stablehlo.divide %e, %zb : tensor<2x4x16x16xf32>
    %o = stablehlo.dot_general %p, %v, batching_dims = [0, 1] x [0, 2], contracting_dims = [3] x [1] : (tensor<2x4x16x16xf32>, tensor<2x16x4x16xf32>) -> tensor<2x4x16x16xf32>
    %out = stablehlo.transpose %o, dims = [0, 2, 1, 3] : (tensor<2x4x16x16xf32>) -> tensor<2x16x4x16xf32>
    return %out : tensor<2x16x4x16xf32>
  }
}
