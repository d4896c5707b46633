"""Model configs and models: sequence backbone, language model, classifiers."""
