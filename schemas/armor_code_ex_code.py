"""ArmorCodeExCode: ``PUT /armor-code-ex-codes-batch`` (seed 002)."""

from schemas.entity import Entity, audit_fields, integer, text

ARMOR_CODE_EX_CODE = Entity(
    name="ArmorCodeExCode",
    table="armor_code_ex_code",
    path="/armor-code-ex-codes-batch",
    key=("armorCodeExCode_Key",),
    fields=(
        integer("armorCodeExCode_Key", required=True),
        text("armor_Code", required=True),
        text("ex_Code", required=True),
        *audit_fields(),
    ),
)
