"""The index-copy family: cat.index_copy, a KV cache written in place at given positions, recognised from
scatter."""
