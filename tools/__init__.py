"""Scripts that train and evaluate Sfumato's embedded models; never imported by the engine."""
