"""The experts family: cat.expert_bmm, a batched matrix product whose left matrices are picked from a stack by an
index per row (a mixture-of-experts layer's chosen experts), read in place instead of gathered first."""
