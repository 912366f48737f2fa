"""Collection and replay: environments -> episode collector -> TensorDict replay -> batches."""
