import json

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import Order, OrderLine, Product


@require_GET
def product_list(request):
    products = Product.objects.select_related("category")
    data = [
        {
            "id": p.pk,
            "sku": p.sku,
            "name": p.name,
            "price": str(p.price),
            "category": p.category.name,
        }
        for p in products
    ]
    return JsonResponse({"products": data})


@csrf_exempt
@require_POST
@login_required
def create_order(request):
    """Body: {"lines": [{"sku": "...", "quantity": 2}, ...]}"""
    try:
        payload = json.loads(request.body or b"{}")
        lines = payload["lines"]
        if not lines:
            raise ValueError("empty order")
        wanted = {line["sku"]: int(line.get("quantity", 1)) for line in lines}
    except (ValueError, KeyError, TypeError) as exc:
        return JsonResponse({"error": f"bad request: {exc}"}, status=400)

    products = {p.sku: p for p in Product.objects.filter(sku__in=wanted)}
    missing = sorted(set(wanted) - set(products))
    if missing:
        return JsonResponse({"error": "unknown sku", "skus": missing}, status=400)

    with transaction.atomic():
        order = Order.objects.create(user=request.user)
        OrderLine.objects.bulk_create(
            OrderLine(order=order, product=products[sku], quantity=qty)
            for sku, qty in wanted.items()
        )
    return JsonResponse({"id": order.pk, "total": str(order.total())}, status=201)
