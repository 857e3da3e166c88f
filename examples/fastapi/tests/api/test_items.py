import uuid

from app import crud
from app.models import Item, ItemCreate
from fastapi.testclient import TestClient
from sqlmodel import Session

from tests.utils.user import create_random_user
from tests.utils.utils import random_lower_string


def create_random_item(db: Session) -> Item:
    owner = create_random_user(db)
    return crud.create_item(session=db, owner_id=owner.id, item_in=ItemCreate(
        title=random_lower_string(), description=random_lower_string()))


def test_create_item(client: TestClient, superuser_token_headers: dict[str, str]) -> None:
    data = {"title": "Foo", "description": "Fighters"}
    response = client.post("/api/v1/items/", headers=superuser_token_headers, json=data)
    assert response.status_code == 200
    content = response.json()
    assert content["title"] == data["title"]
    assert "owner_id" in content


def test_read_item(client: TestClient, superuser_token_headers: dict[str, str],
                   db: Session) -> None:
    item = create_random_item(db)
    response = client.get(f"/api/v1/items/{item.id}", headers=superuser_token_headers)
    assert response.status_code == 200
    assert response.json()["title"] == item.title


def test_read_item_not_found(client: TestClient,
                             superuser_token_headers: dict[str, str]) -> None:
    response = client.get(f"/api/v1/items/{uuid.uuid4()}", headers=superuser_token_headers)
    assert response.status_code == 404


def test_read_item_not_enough_permissions(client: TestClient,
                                          normal_user_token_headers: dict[str, str],
                                          db: Session) -> None:
    item = create_random_item(db)
    response = client.get(f"/api/v1/items/{item.id}", headers=normal_user_token_headers)
    assert response.status_code == 400


def test_read_items(client: TestClient, superuser_token_headers: dict[str, str],
                    db: Session) -> None:
    create_random_item(db)
    create_random_item(db)
    response = client.get("/api/v1/items/", headers=superuser_token_headers)
    assert len(response.json()["data"]) >= 2


def test_delete_item(client: TestClient, superuser_token_headers: dict[str, str],
                     db: Session) -> None:
    item_id = create_random_item(db).id
    response = client.delete(f"/api/v1/items/{item_id}", headers=superuser_token_headers)
    assert response.status_code == 200
    db.expire_all()
    assert db.get(Item, item_id) is None


def test_delete_item_not_found(client: TestClient,
                               superuser_token_headers: dict[str, str]) -> None:
    response = client.delete(f"/api/v1/items/{uuid.uuid4()}", headers=superuser_token_headers)
    assert response.status_code == 404
