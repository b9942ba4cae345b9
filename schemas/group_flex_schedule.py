"""GroupFlexSchedule: ``PUT /groups/{groupID}/flex-schedules-batch`` (seed 001)."""

from schemas.entity import Entity, Parent, audit_fields, datetime, integer, text

GROUP_FLEX_SCHEDULE = Entity(
    name="GroupFlexSchedule",
    table="group_flex_schedule",
    path="/groups/{groupID}/flex-schedules-batch",
    key=("groupFlexSchedule_Key",),
    bindings={"groupID": "group_ID"},
    parent=Parent(table="group_flex", fields=("group_ID", "plan_ID", "calendar_Year")),
    fields=(
        integer("groupFlexSchedule_Key", required=True),
        text("calendar_Year", required=True, min_length=1, max_length=4),
        text("group_ID", required=True, min_length=1, max_length=20),
        text("plan_ID", required=True, min_length=1, max_length=20),
        datetime("schedule_Date", required=True),
        text("schedule_Type", required=True, min_length=1, max_length=16),
        *audit_fields(),
    ),
)
