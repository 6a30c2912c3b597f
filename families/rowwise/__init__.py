"""The row-wise family: cat.softmax, cat.layernorm and cat.rmsnorm over the trailing dimension, recognised from
their reduce-and-broadcast forms (probed on data), on our own one-block-per-row kernels."""
