"""SubscriberFlexExported (seed 000): ``PUT /subscribers/{subscriberID}/groups/{groupID}
/plans/{planID}/flexes/{calendarYear}/{effectiveDate}/exports-batch``."""

from schemas.entity import Entity, Parent, audit_fields, datetime, decimal, integer, text

SUBSCRIBER_FLEX_EXPORTED = Entity(
    name="SubscriberFlexExported",
    table="subscriber_flex_exported",
    path=(
        "/subscribers/{subscriberID}/groups/{groupID}/plans/{planID}"
        "/flexes/{calendarYear}/{effectiveDate}/exports-batch"
    ),
    key=("subscriberFlexExported_Key",),
    bindings={
        "subscriberID": "subscriber_ID",
        "groupID": "group_ID",
        "planID": "plan_ID",
        "calendarYear": "calendar_Year",
        "effectiveDate": "effective_Date",
    },
    parent=Parent(
        table="subscriber_flex",
        fields=("subscriber_ID", "group_ID", "plan_ID", "calendar_Year", "effective_Date"),
    ),
    fields=(
        integer("subscriberFlexExported_Key", required=True),
        text("calendar_Year", required=True, min_length=1, max_length=4),
        datetime("effective_Date", required=True),
        decimal("export_Amount"),
        datetime("export_Date"),
        text("export_Status", max_length=32),
        text("export_Type", max_length=32),
        text("group_ID", required=True, min_length=1, max_length=20),
        text("plan_ID", required=True, min_length=1, max_length=20),
        text("subscriber_ID", required=True, min_length=1, max_length=9),
        *audit_fields(),
    ),
)
