-- Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d).
-- One role (POSTGRES_USER) owns three databases: MLflow's tracking and registry store,
-- Dagster's run/event/schedule storage, and the lifecycle store (decisions, prediction log).
CREATE DATABASE mlflow;
CREATE DATABASE dagster;
CREATE DATABASE lifecycle;
