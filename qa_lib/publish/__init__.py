"""Publishing a trained model: manifest, model card, targets (folder, S3), champion pointer."""
