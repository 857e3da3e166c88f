"""Settings read once, at import, from the environment (as the FastAPI template does)."""

from __future__ import annotations

from pydantic import computed_field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    SECRET_KEY: str = "change-this-secret"
    POSTGRES_SERVER: str
    POSTGRES_PORT: int = 5432
    POSTGRES_USER: str
    POSTGRES_PASSWORD: str = ""
    POSTGRES_DB: str = ""
    FIRST_SUPERUSER: str = "admin@example.com"
    FIRST_SUPERUSER_PASSWORD: str = "change-this-password"
    EMAIL_TEST_USER: str = "test@example.com"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def SQLALCHEMY_DATABASE_URI(self) -> str:
        from sqlalchemy import URL

        return URL.create("postgresql+psycopg", username=self.POSTGRES_USER,
                          password=self.POSTGRES_PASSWORD or None, host=self.POSTGRES_SERVER,
                          port=self.POSTGRES_PORT, database=self.POSTGRES_DB
                          ).render_as_string(hide_password=False)


settings = Settings()  # type: ignore[call-arg]
