"""The API: login, users, items. Its session dependency uses the module-level engine."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel
from sqlmodel import Session, func, select, text

from app import crud
from app.core.db import engine
from app.core.security import create_access_token, read_access_token
from app.models import Item, ItemCreate, ItemPublic, User, UserCreate, UserPublic, UserUpdate


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    with Session(engine) as session:  # the startup check of the database
        session.exec(text("SELECT 1"))  # type: ignore[call-overload]
    yield


app = FastAPI(lifespan=lifespan)


def get_db() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


def current_user(session: SessionDep, authorization: Annotated[str, Header()] = "") -> User:
    subject = read_access_token(authorization.removeprefix("Bearer "))
    user = session.get(User, uuid.UUID(subject)) if subject else None
    if user is None:
        raise HTTPException(status_code=401, detail="Could not validate credentials")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def superuser(user: CurrentUser) -> User:
    if not user.is_superuser:
        raise HTTPException(status_code=403, detail="The user doesn't have enough privileges")
    return user


class Login(BaseModel):
    username: str
    password: str


@app.post("/api/v1/login/access-token")
def login(session: SessionDep, form: Login) -> dict[str, str]:
    user = crud.authenticate(session=session, email=form.username, password=form.password)
    if user is None:
        raise HTTPException(status_code=400, detail="Incorrect email or password")
    return {"access_token": create_access_token(str(user.id)), "token_type": "bearer"}


@app.get("/api/v1/users/me", response_model=UserPublic)
def read_me(user: CurrentUser) -> User:
    return user


@app.patch("/api/v1/users/me", response_model=UserPublic)
def update_me(session: SessionDep, user: CurrentUser, user_in: UserUpdate) -> User:
    return crud.update_user(session=session, user=session.merge(user), user_in=user_in)


@app.post("/api/v1/users/", response_model=UserPublic, dependencies=[Depends(superuser)])
def create_user(session: SessionDep, user_in: UserCreate) -> User:
    if crud.get_user_by_email(session=session, email=user_in.email):
        raise HTTPException(status_code=400, detail="The user with this email already exists")
    return crud.create_user(session=session, user_create=user_in)


@app.get("/api/v1/users/", dependencies=[Depends(superuser)])
def read_users(session: SessionDep) -> dict[str, object]:
    users = session.exec(select(User).order_by(User.email)).all()
    return {"data": [UserPublic.model_validate(u) for u in users], "count": len(users)}


@app.post("/api/v1/items/", response_model=ItemPublic)
def create_item(session: SessionDep, user: CurrentUser, item_in: ItemCreate) -> Item:
    return crud.create_item(session=session, item_in=item_in, owner_id=user.id)


@app.get("/api/v1/items/")
def read_items(session: SessionDep, user: CurrentUser) -> dict[str, object]:
    query = select(Item) if user.is_superuser else select(Item).where(Item.owner_id == user.id)
    count = session.exec(select(func.count()).select_from(query.subquery())).one()
    return {"data": [ItemPublic.model_validate(i) for i in session.exec(query).all()],
            "count": count}


@app.get("/api/v1/items/{item_id}", response_model=ItemPublic)
def read_item(session: SessionDep, user: CurrentUser, item_id: uuid.UUID) -> Item:
    item = session.get(Item, item_id)
    if item is None:
        raise HTTPException(status_code=404, detail="Item not found")
    if not user.is_superuser and item.owner_id != user.id:
        raise HTTPException(status_code=400, detail="Not enough permissions")
    return item


@app.delete("/api/v1/items/{item_id}")
def delete_item(session: SessionDep, user: CurrentUser, item_id: uuid.UUID) -> dict[str, str]:
    item = session.get(Item, item_id)
    if item is None:
        raise HTTPException(status_code=404, detail="Item not found")
    if not user.is_superuser and item.owner_id != user.id:
        raise HTTPException(status_code=400, detail="Not enough permissions")
    session.delete(item)
    session.commit()
    return {"message": "Item deleted successfully"}
