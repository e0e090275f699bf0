"""Training stage: one loop shared by pretraining, instruction tuning and LoRA; batching; torchrun set-up."""
