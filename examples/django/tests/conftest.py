from decimal import Decimal

import pytest
from django.test import Client

from catalog.models import Category, Product


@pytest.fixture
def category(db):
    return Category.objects.create(name="electronics")


@pytest.fixture
def product(category):
    return Product.objects.create(
        category=category, name="Headphones", price=Decimal("49.90"), sku="EL-001"
    )


@pytest.fixture
def customer(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="s3cret!")


@pytest.fixture(scope="module")
def payloads():
    """Request bodies shared by several tests in a module (no DB access)."""
    return {
        "two_headphones": {"lines": [{"sku": "EL-001", "quantity": 2}]},
        "unknown_sku": {"lines": [{"sku": "NOPE-404", "quantity": 1}]},
        "empty": {"lines": []},
    }


@pytest.fixture(scope="module")
def anon_client():
    """A module-scoped anonymous client; creating it does not touch the DB."""
    return Client()
