import json
from decimal import Decimal

import pytest

from catalog.models import Order, Product


def post_json(client, url, data):
    return client.post(url, data=json.dumps(data), content_type="application/json")


@pytest.mark.django_db
def test_product_list_empty(anon_client):
    response = anon_client.get("/products/")
    assert response.status_code == 200
    assert response.json() == {"products": []}


def test_product_list(client, product):
    Product.objects.create(
        category=product.category, name="Cable", price=Decimal("3.50"), sku="EL-002"
    )
    response = client.get("/products/")
    assert response.status_code == 200
    data = response.json()["products"]
    assert [p["sku"] for p in data] == ["EL-001", "EL-002"]
    assert data[0] == {
        "id": product.pk,
        "sku": "EL-001",
        "name": "Headphones",
        "price": "49.90",
        "category": "electronics",
    }


def test_products_rejects_post_without_db(anon_client):
    # require_GET answers before any query: no DB marker needed.
    assert anon_client.post("/products/").status_code == 405


@pytest.mark.django_db
def test_create_order_requires_login(anon_client, payloads):
    response = post_json(anon_client, "/orders/", payloads["two_headphones"])
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert Order.objects.count() == 0


def test_create_order(client, customer, product, payloads):
    client.force_login(customer)
    response = post_json(client, "/orders/", payloads["two_headphones"])
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["total"] == "99.80"
    order = Order.objects.get()
    assert body["id"] == order.pk
    assert order.user == customer
    assert order.lines.get().quantity == 2


def test_create_order_unknown_sku(client, customer, payloads):
    client.force_login(customer)
    response = post_json(client, "/orders/", payloads["unknown_sku"])
    assert response.status_code == 400
    assert response.json()["skus"] == ["NOPE-404"]
    assert Order.objects.count() == 0


def test_create_order_empty(admin_client, payloads):
    response = post_json(admin_client, "/orders/", payloads["empty"])
    assert response.status_code == 400


def test_admin_product_changelist(admin_client, product):
    response = admin_client.get("/admin/catalog/product/")
    assert response.status_code == 200
    assert b"EL-001" in response.content


def test_admin_sees_seeded_categories(admin_client, django_user_model):
    assert django_user_model.objects.filter(is_superuser=True).count() == 1
    response = admin_client.get("/admin/catalog/category/")
    assert response.status_code == 200
    assert b"books" in response.content
    assert b"games" in response.content
