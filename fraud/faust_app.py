"""`faust -A fraud.faust_app worker`: the scoring worker, for Faust's own command line."""

from core.settings import Settings
from fraud.worker import build
from models.serving import quiet_mlflow_client_env

settings = Settings()
quiet_mlflow_client_env(settings.mlflow_uri)
app = build(settings).app
