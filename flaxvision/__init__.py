"""flaxvision: the library code behind the DVC stages (data, transforms, training, evaluation)."""
