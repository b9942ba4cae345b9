"""GroupPlanYear: ``PUT /groups/{groupID}/divisions/{divisionID}/plan-years-batch`` (seed 003)."""

from schemas.entity import Entity, Parent, audit_fields, boolean, datetime, text

GROUP_PLAN_YEAR = Entity(
    name="GroupPlanYear",
    table="group_plan_year",
    path="/groups/{groupID}/divisions/{divisionID}/plan-years-batch",
    key=("group_ID", "division_ID", "plan_Year"),
    bindings={"groupID": "group_ID", "divisionID": "division_ID"},
    parent=Parent(table="group_division", fields=("group_ID", "division_ID")),
    fields=(
        text("group_ID", required=True, min_length=1, max_length=20),
        text("division_ID", required=True, min_length=1),
        text("plan_Year", required=True, min_length=1),
        text("ex_Code"),
        datetime("from_Date"),
        text("plan_Type"),
        boolean("qtr4_Accum", required=True),
        text("qtr4_Benefit_Code"),
        boolean("qtr4_Deductible", required=True),
        datetime("qtr4_From_Date"),
        boolean("qtr4_Member", required=True),
        boolean("qtr4_Out_Of_Pocket", required=True),
        text("qtr4_Out_Of_Pocket_Type"),
        text("qtr4_PlanYear"),
        boolean("qtr4_Subscriber", required=True),
        datetime("qtr4_Thru_Date"),
        datetime("thru_Date"),
        *audit_fields(),
    ),
)
