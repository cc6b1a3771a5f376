"""Model: vocabulary, the Siamese encoder, training, encoding and export."""
