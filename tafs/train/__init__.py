"""GRPO training: one trainer for TAFS-GRPO and every baseline (methods differ by sampler and advantages)."""
