"""Training-side tools: degradation, the face cache, datasets, losses and the identity embedder trainer."""
