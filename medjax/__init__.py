"""medjax: a JAX trainer for medical vision-language foundation models (Med-MLLM)."""
