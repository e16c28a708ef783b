"""Image generation: the request, prompts, samplers, the generation function, infotext."""
