"""Learning from instructions and preferences: SFT, the reward model, DPO/KTO and PPO/RLOO/GRPO."""
