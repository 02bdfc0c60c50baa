"""The offline side: data loading, importers, training, evaluation, retraining."""
