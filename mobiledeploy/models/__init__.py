"""Models: architectures (build/load in Keras) and the artifact resolver/inspector."""
