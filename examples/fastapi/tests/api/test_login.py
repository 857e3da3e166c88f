from app.core.config import settings
from fastapi.testclient import TestClient


def test_get_access_token(client: TestClient) -> None:
    login = {"username": settings.FIRST_SUPERUSER, "password": settings.FIRST_SUPERUSER_PASSWORD}
    response = client.post("/api/v1/login/access-token", json=login)
    assert response.status_code == 200
    assert response.json()["access_token"]


def test_get_access_token_incorrect_password(client: TestClient) -> None:
    login = {"username": settings.FIRST_SUPERUSER, "password": "incorrect"}
    response = client.post("/api/v1/login/access-token", json=login)
    assert response.status_code == 400


def test_use_access_token(client: TestClient, superuser_token_headers: dict[str, str]) -> None:
    response = client.get("/api/v1/users/me", headers=superuser_token_headers)
    assert response.status_code == 200
    assert response.json()["email"] == settings.FIRST_SUPERUSER


def test_a_bad_token_is_refused(client: TestClient) -> None:
    response = client.get("/api/v1/users/me", headers={"Authorization": "Bearer x.y"})
    assert response.status_code == 401
