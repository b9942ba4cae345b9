"""Benefit: ``PUT /benefits-batch`` (seed 004)."""

from schemas.entity import Entity, Parent, audit_fields, boolean, text

BENEFIT = Entity(
    name="Benefit",
    table="benefit",
    path="/benefits-batch",
    key=("benefit_Code",),
    parent=Parent(table="benefit_category", fields=("benefit_Category",)),
    fields=(
        text("benefit_Code", required=True, min_length=1, max_length=10),
        boolean("allow_Flat_Tax", required=True),
        text("benefit_Category"),
        text("benefit_Description"),
        text("default_Unit_Type"),
        text("hipaA_Code"),
        text("invalid_Diag_Ex_Code"),
        text("invalid_Procedure_Ex_Code"),
        text("invalid_Prov_Type_Ex_Code"),
        text("invalid_Specialty_Ex_Code"),
        text("medicare", required=True, min_length=1, max_length=1),
        text("pend_Ex_Code"),
        text("pend_Flag", required=True, min_length=1, max_length=1),
        text("require_Type_Of_Svc"),
        *audit_fields(),
    ),
)
