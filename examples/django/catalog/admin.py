from django.contrib import admin

from .models import Category, Order, OrderLine, Product


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "created"]
    inlines = [OrderLineInline]


admin.site.register(Category)
admin.site.register(Product, list_display=["sku", "name", "category", "price"])
