"""Serving a trained model the standard way: an MLflow pyfunc model (``mlflow_model``) that wraps the project's
``Predictor``, served by ``mlflow models serve``, KServe's MLflow runtime or an AzureML online endpoint."""
