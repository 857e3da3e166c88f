from app import crud
from app.core.config import settings
from app.models import UserCreate
from fastapi.testclient import TestClient
from sqlmodel import Session

from tests.utils.utils import random_email, random_lower_string


def test_get_users_superuser_me(client: TestClient,
                                superuser_token_headers: dict[str, str]) -> None:
    current = client.get("/api/v1/users/me", headers=superuser_token_headers).json()
    assert current["is_active"]
    assert current["is_superuser"]
    assert current["email"] == settings.FIRST_SUPERUSER


def test_get_users_normal_user_me(client: TestClient,
                                  normal_user_token_headers: dict[str, str]) -> None:
    current = client.get("/api/v1/users/me", headers=normal_user_token_headers).json()
    assert current["is_active"]
    assert not current["is_superuser"]
    assert current["email"] == settings.EMAIL_TEST_USER


def test_create_user_new_email(client: TestClient, superuser_token_headers: dict[str, str],
                               db: Session) -> None:
    username, password = random_email(), random_lower_string()
    response = client.post("/api/v1/users/", headers=superuser_token_headers,
                           json={"email": username, "password": password})
    assert 200 <= response.status_code < 300
    user = crud.get_user_by_email(session=db, email=username)
    assert user
    assert user.email == response.json()["email"]


def test_create_user_existing_username(client: TestClient,
                                       superuser_token_headers: dict[str, str],
                                       db: Session) -> None:
    username, password = random_email(), random_lower_string()
    crud.create_user(session=db, user_create=UserCreate(email=username, password=password))
    response = client.post("/api/v1/users/", headers=superuser_token_headers,
                           json={"email": username, "password": password})
    assert response.status_code == 400
    assert "_id" not in response.json()


def test_create_user_by_normal_user(client: TestClient,
                                    normal_user_token_headers: dict[str, str]) -> None:
    response = client.post("/api/v1/users/", headers=normal_user_token_headers,
                           json={"email": random_email(), "password": random_lower_string()})
    assert response.status_code == 403


def test_retrieve_users(client: TestClient, superuser_token_headers: dict[str, str],
                        db: Session) -> None:
    for _ in range(2):
        crud.create_user(session=db, user_create=UserCreate(email=random_email(),
                                                            password=random_lower_string()))
    response = client.get("/api/v1/users/", headers=superuser_token_headers).json()
    assert response["count"] > 1
    for user in response["data"]:
        assert "email" in user


def test_update_user_me(client: TestClient, normal_user_token_headers: dict[str, str],
                        db: Session) -> None:
    response = client.patch("/api/v1/users/me", headers=normal_user_token_headers,
                            json={"full_name": "Updated Name"})
    assert response.status_code == 200
    db.expire_all()
    user = crud.get_user_by_email(session=db, email=settings.EMAIL_TEST_USER)
    assert user
    assert user.full_name == "Updated Name"


def test_normal_user_still_logs_in_later_in_the_module(
        client: TestClient, normal_user_token_headers: dict[str, str]) -> None:
    response = client.get("/api/v1/users/me", headers=normal_user_token_headers)
    assert response.status_code == 200
