"""Compile side: the partition lowered to a ByRE plan, with its buffers planned into one arena."""
