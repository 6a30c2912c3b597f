// Written in the style of JAX's lowering: dense layers as dot_general + broadcast bias, jax.nn.gelu
// (approximate=True) with integer_pow as multiplies, a private helper reached through func.call,
// jax.nn.softmax, and a Flax-style LayerNorm (var = E[x^2] - E[x]^2).
module @jit_mlp {
  func.func public @main(%x: tensor<8x32xf32>, %w1: tensor<32x64xf32>, %b1: tensor<64xf32>,
                         %w2: tensor<64x32xf32>, %g: tensor<32xf32>, %b: tensor<32xf32>) -> tensor<8x32xf32> {
    %0 = stablehlo.dot_general %x, %w1, contracting_dims = [1] x [0] : (tensor<8x32xf32>, tensor<32x64xf32>) -> tensor<8x64xf32>
    %1 = stablehlo.broadcast_in_dim %b1, dims = [1] : (tensor<64xf32>) -> tensor<8x64xf32>
    %2 = stablehlo.add %0, %1 : tensor<8x64xf32>
    %3 = call @gelu(%2) : (tensor<8x64xf32>) -> tensor<8x64xf32>
    %4 = stablehlo.dot_general %3, %w2, contracting_dims = [1] x [0] : (tensor<8x64xf32>, tensor<64x32xf32>) -> tensor<8x32xf32>
    %5 = call @softmax(%4) : (tensor<8x32xf32>) -> tensor<8x32xf32>
    %6 = call @layer_norm(%5, %g, %b) : (tensor<8x32xf32>, tensor<32xf32>, tensor<32xf32>) -> tensor<8x32xf32>
    return %6 : tensor<8x32xf32>
  }
  func.func private @gelu(%x: tensor<8x64xf32>) -> tensor<8x64xf32> {
    %c3 = stablehlo.constant dense<4.471500e-02> : tensor<f32>
    %k = stablehlo.constant dense<0.797884583> : tensor<f32>
    %half = stablehlo.constant dense<5.000000e-01> : tensor<f32>
    %one = stablehlo.constant dense<1.000000e+00> : tensor<f32>
    %x2 = stablehlo.multiply %x, %x : tensor<8x64xf32>
    %x3 = stablehlo.multiply %x2, %x : tensor<8x64xf32>
    %c3b = stablehlo.broadcast_in_dim %c3, dims = [] : (tensor<f32>) -> tensor<8x64xf32>
    %t0 = stablehlo.multiply %c3b, %x3 : tensor<8x64xf32>
    %t1 = stablehlo.add %x, %t0 : tensor<8x64xf32>
    %kb = stablehlo.broadcast_in_dim %k, dims = [] : (tensor<f32>) -> tensor<8x64xf32>
    %t2 = stablehlo.multiply %kb, %t1 : tensor<8x64xf32>
    %t3 = stablehlo.tanh %t2 : tensor<8x64xf32>
    %oneb = stablehlo.broadcast_in_dim %one, dims = [] : (tensor<f32>) -> tensor<8x64xf32>
    %t4 = stablehlo.add %oneb, %t3 : tensor<8x64xf32>
    %halfb = stablehlo.broadcast_in_dim %half, dims = [] : (tensor<f32>) -> tensor<8x64xf32>
    %t5 = stablehlo.multiply %halfb, %t4 : tensor<8x64xf32>
    %y = stablehlo.multiply %x, %t5 : tensor<8x64xf32>
    return %y : tensor<8x64xf32>
  }
  func.func private @softmax(%x: tensor<8x32xf32>) -> tensor<8x32xf32> {
    %ninf = stablehlo.constant dense<0xFF800000> : tensor<f32>
    %zero = stablehlo.constant dense<0.000000e+00> : tensor<f32>
    %m = stablehlo.reduce(%x init: %ninf) applies stablehlo.maximum across dimensions = [1] : (tensor<8x32xf32>, tensor<f32>) -> tensor<8xf32>
    %mb = stablehlo.broadcast_in_dim %m, dims = [0] : (tensor<8xf32>) -> tensor<8x32xf32>
    %d = stablehlo.subtract %x, %mb : tensor<8x32xf32>
    %e = stablehlo.exponential %d : tensor<8x32xf32>
    %s = stablehlo.reduce(%e init: %zero) applies stablehlo.add across dimensions = [1] : (tensor<8x32xf32>, tensor<f32>) -> tensor<8xf32>
    %sb = stablehlo.broadcast_in_dim %s, dims = [0] : (tensor<8xf32>) -> tensor<8x32xf32>
    %y = stablehlo.divide %e, %sb : tensor<8x32xf32>
    return %y : tensor<8x32xf32>
  }
  func.func private @layer_norm(%x: tensor<8x32xf32>, %g: tensor<32xf32>, %b: tensor<32xf32>) -> tensor<8x32xf32> {
    %zero = stablehlo.constant dense<0.000000e+00> : tensor<f32>
    %n = stablehlo.constant dense<3.200000e+01> : tensor<8xf32>
    %eps = stablehlo.constant dense<9.99999997E-7> : tensor<8xf32>
    %sum = stablehlo.reduce(%x init: %zero) applies stablehlo.add across dimensions = [1] : (tensor<8x32xf32>, tensor<f32>) -> tensor<8xf32>
    %mean = stablehlo.divide %sum, %n : tensor<8xf32>
    %xx = stablehlo.multiply %x, %x : tensor<8x32xf32>
    %sum2 = stablehlo.reduce(%xx init: %zero) applies stablehlo.add across dimensions = [1] : (tensor<8x32xf32>, tensor<f32>) -> tensor<8xf32>
    %m2 = stablehlo.divide %sum2, %n : tensor<8xf32>
    %mm = stablehlo.multiply %mean, %mean : tensor<8xf32>
    %var = stablehlo.subtract %m2, %mm : tensor<8xf32>
    %ve = stablehlo.add %var, %eps : tensor<8xf32>
    %r = stablehlo.rsqrt %ve : tensor<8xf32>
    %meanb = stablehlo.broadcast_in_dim %mean, dims = [0] : (tensor<8xf32>) -> tensor<8x32xf32>
    %rb = stablehlo.broadcast_in_dim %r, dims = [0] : (tensor<8xf32>) -> tensor<8x32xf32>
    %c = stablehlo.subtract %x, %meanb : tensor<8x32xf32>
    %nrm = stablehlo.multiply %c, %rb : tensor<8x32xf32>
    %gb = stablehlo.broadcast_in_dim %g, dims = [1] : (tensor<32xf32>) -> tensor<8x32xf32>
    %bb = stablehlo.broadcast_in_dim %b, dims = [1] : (tensor<32xf32>) -> tensor<8x32xf32>
    %y0 = stablehlo.multiply %nrm, %gb : tensor<8x32xf32>
    %y = stablehlo.add %y0, %bb : tensor<8x32xf32>
    return %y : tensor<8x32xf32>
  }
}
