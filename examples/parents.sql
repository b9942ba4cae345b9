-- Parent records the examples refer to (the worker answers 404 for items whose parent is missing).
INSERT INTO vbapi.benefit_category (benefit_category) VALUES ('MED') ON CONFLICT DO NOTHING;
INSERT INTO vbapi.group_flex (group_id, plan_id, calendar_year) VALUES ('G100', 'P1', '2025')
    ON CONFLICT DO NOTHING;
INSERT INTO vbapi.group_division (group_id, division_id) VALUES ('G100', 'D1') ON CONFLICT DO NOTHING;
INSERT INTO vbapi.subscriber_flex (subscriber_id, group_id, plan_id, calendar_year, effective_date)
    VALUES ('S100', 'G100', 'P1', '2025', '2025-01-01T00:00:00Z') ON CONFLICT DO NOTHING;
