from app import crud
from app.models import User, UserCreate, UserUpdate
from fastapi.testclient import TestClient
from sqlmodel import Session

from tests.utils.utils import random_email, random_lower_string


def user_authentication_headers(*, client: TestClient, email: str,
                                password: str) -> dict[str, str]:
    response = client.post("/api/v1/login/access-token",
                           json={"username": email, "password": password})
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def create_random_user(db: Session) -> User:
    return crud.create_user(session=db, user_create=UserCreate(
        email=random_email(), password=random_lower_string()))


def authentication_token_from_email(*, client: TestClient, email: str,
                                    db: Session) -> dict[str, str]:
    """The token of the user with ``email``, made first if it does not exist."""
    password = random_lower_string()
    user = crud.get_user_by_email(session=db, email=email)
    if not user:
        user = crud.create_user(session=db, user_create=UserCreate(email=email,
                                                                    password=password))
    else:
        user = crud.update_user(session=db, user=user, user_in=UserUpdate(password=password))
    return user_authentication_headers(client=client, email=email, password=password)
