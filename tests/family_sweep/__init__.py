"""The family sweep: many Hugging Face architectures, each compiled through every door and compared with eager."""
